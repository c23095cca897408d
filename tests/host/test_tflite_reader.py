"""The dependency-free TFLite reader against LiteRT's own view of real converted models."""

from __future__ import annotations

import os
import random
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tflite_models

from edgeladder.errors import ModelFileError
from edgeladder.model.tflite import read_model
from edgeladder.model.tflite.reader import BUILTIN_OPS, NUMPY_DTYPES, TENSOR_TYPES, _Buf, _Table
from edgeladder.model.tflite.summary import summarize

MODELS = {
    "mlp_int8": tflite_models.mlp_int8,
    "conv_int8": tflite_models.conv_int8,
    "mlp_float": tflite_models.mlp_float,
    "mlp_float_buffer_offset": tflite_models.mlp_float_buffer_offset,
}


@pytest.fixture(params=sorted(MODELS))
def model_path(request):
    return MODELS[request.param]()


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No default delegate: XNNPACK would rewrite the float graph's execution plan.
    it = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    return it


def _root(data: bytes) -> _Table:
    buf = _Buf(data, None)
    return buf.table(buf.read("I", 0, "root"), "Model")


# --- agreement with LiteRT -------------------------------------------------------------


def test_tensors_match_litert(model_path):
    model = read_model(model_path)
    # LiteRT may append runtime tensors (kernel scratch) after the file's own.
    n = len(model.tensors)
    details = [d for d in _interpreter(model_path).get_tensor_details() if d["index"] < n]
    assert sorted(d["index"] for d in details) == list(range(len(model.tensors)))
    for d in details:
        t = model.tensors[d["index"]]
        assert t.index == d["index"]
        assert t.name == d["name"]
        assert list(t.shape) == d["shape"].tolist()
        assert list(t.shape_signature or t.shape) == d["shape_signature"].tolist()
        assert np.dtype(NUMPY_DTYPES[t.dtype]) == np.dtype(d["dtype"])
        q = d["quantization_parameters"]
        assert np.array_equal(np.array(t.scales, dtype=np.float32), q["scales"])
        assert list(t.zero_points) == q["zero_points"].tolist()
        assert t.quantized_dimension == q["quantized_dimension"]


def test_constant_data_matches_litert(model_path):
    model = read_model(model_path)
    it = _interpreter(model_path)
    constants = [t for t in model.tensors if t.data is not None]
    assert constants, "every test model has weights"
    for t in constants:
        expected = it.get_tensor(t.index)
        assert t.numpy().dtype == expected.dtype
        assert np.array_equal(t.numpy(), expected), t.name


def test_ops_and_graph_io_match_litert(model_path):
    model = read_model(model_path)
    it = _interpreter(model_path)
    assert list(model.inputs) == [d["index"] for d in it.get_input_details()]
    assert list(model.outputs) == [d["index"] for d in it.get_output_details()]
    ops = it._get_ops_details()
    assert [op.op_name for op in model.ops] == [d["op_name"] for d in ops]
    for op, d in zip(model.ops, ops, strict=True):
        assert list(op.inputs) == d["inputs"].tolist()
        assert list(op.outputs) == d["outputs"].tolist()


def test_builtin_options_of_conv_model():
    model = read_model(tflite_models.conv_int8())
    by_name = {op.op_name: op.options for op in model.ops}
    assert by_name["CONV_2D"] == {
        "padding": "VALID", "stride_w": 1, "stride_h": 1, "fused_activation_function": "RELU",
        "dilation_w": 1, "dilation_h": 1,
    }  # fmt: skip
    assert by_name["DEPTHWISE_CONV_2D"]["padding"] == "SAME"
    assert by_name["DEPTHWISE_CONV_2D"]["depth_multiplier"] == 2
    for pool in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        assert by_name[pool] == {
            "padding": "VALID", "stride_w": 2, "stride_h": 2, "filter_w": 2, "filter_h": 2,
            "fused_activation_function": "NONE",
        }  # fmt: skip
    assert by_name["CONCATENATION"] == {"axis": -1, "fused_activation_function": "NONE"}
    assert by_name["ADD"] == {"fused_activation_function": "NONE"}
    assert by_name["FULLY_CONNECTED"] == {
        "fused_activation_function": "NONE",
        "keep_num_dims": False,
    }


def test_mlp_options_and_metadata():
    model = read_model(tflite_models.mlp_int8())
    assert [op.op_name for op in model.ops] == ["FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
    assert model.ops[0].options["fused_activation_function"] == "RELU"
    assert model.ops[2].options == {"beta": 1.0}
    assert model.version == 3
    assert len(model.subgraphs) == 1
    assert "min_runtime_version" in model.metadata


def test_op_and_type_tables_match_the_schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert len(BUILTIN_OPS) > 150
    for code, name in enumerate(BUILTIN_OPS):
        assert ops[code] == name
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    for code, name in enumerate(TENSOR_TYPES):
        assert types[code] == name


def test_bytes_and_path_give_the_same_model(model_path):
    a = summarize(read_model(model_path))
    b = summarize(read_model(model_path.read_bytes()))
    assert a.pop("path") == str(model_path)
    assert b.pop("path") is None
    assert a == b


def test_buffer_offset_layout_is_read():
    path = tflite_models.mlp_float_buffer_offset()
    data = path.read_bytes()
    # The file really uses Buffer.offset/size (data outside the flatbuffer) ...
    offsets = [t.scalar(6, "Q", 0) for t in _root(data).tables(12, "buffers")]
    assert any(o > 1 for o in offsets)
    # ... and the weights read through it equal those of the same model stored inline.
    inline = read_model(tflite_models.mlp_float())
    model = read_model(path)
    for a, b in zip(model.tensors, inline.tensors, strict=True):
        assert a.data == b.data, a.name


def test_buffer_offset_outside_the_file_is_rejected():
    data = bytearray(tflite_models.mlp_float_buffer_offset().read_bytes())
    for t in _root(bytes(data)).tables(12, "buffers"):
        if t.scalar(6, "Q", 0) > 1:
            struct.pack_into("<Q", data, t._field(6), len(data) + 100)
            break
    with pytest.raises(ModelFileError, match="outside"):
        read_model(bytes(data))


# --- bad input ---------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tflite"
    with pytest.raises(ModelFileError) as err:
        read_model(path)
    assert _one_line(err) == f"{path}: file not found"


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match="directory"):
        read_model(tmp_path)


@pytest.mark.parametrize("size", [0, 1, 7])
def test_too_short(tmp_path, size):
    path = tmp_path / "short.tflite"
    path.write_bytes(b"\x00" * size)
    with pytest.raises(ModelFileError) as err:
        read_model(path)
    assert _one_line(err).startswith(f"{path}: too short ({size} bytes)")


def test_wrong_identifier(tmp_path):
    data = bytearray(tflite_models.mlp_int8().read_bytes())
    data[4:8] = b"TFL2"
    path = tmp_path / "old.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as err:
        read_model(path)
    assert f"{path}: not a TFLite model: expected identifier TFL3 at byte 4" in _one_line(err)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes(seed):
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(rng.choice([8, 16, 64, 1000])))
    if seed % 2:
        data[4:8] = b"TFL3"  # get past the identifier and into the parser
    with pytest.raises(ModelFileError):
        read_model(bytes(data))


def test_every_truncation_is_a_model_file_error():
    data = tflite_models.mlp_int8().read_bytes()
    for cut in range(len(data)):
        with pytest.raises(ModelFileError):
            read_model(data[:cut])


def test_truncated_conv_model_names_the_file(tmp_path):
    data = tflite_models.conv_int8().read_bytes()
    path = tmp_path / "cut.tflite"
    for cut in (9, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError) as err:
            read_model(path)
        assert _one_line(err).startswith(f"{path}: ")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mutated_models_never_raise_anything_else(name):
    # Flip a few bytes at random: the result parses (and summarizes) or is a ModelFileError.
    data = MODELS[name]().read_bytes()
    rng = random.Random(name)
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            summarize(read_model(bytes(mutated)))
        except ModelFileError as e:
            assert "\n" not in str(e)


def test_no_subgraphs():
    data = bytearray(tflite_models.mlp_int8().read_bytes())
    root = _root(bytes(data))
    vector = root._target(8)  # Model.subgraphs
    struct.pack_into("<I", data, vector, 0)
    with pytest.raises(ModelFileError, match="no subgraphs"):
        read_model(bytes(data))


def test_tensor_index_out_of_range():
    data = bytearray(tflite_models.mlp_int8().read_bytes())
    subgraph = _root(bytes(data)).tables(8, "subgraphs")[0]
    inputs = subgraph._target(6)  # SubGraph.inputs: [count, index...]
    struct.pack_into("<i", data, inputs + 4, 999)
    with pytest.raises(ModelFileError, match="refers to tensor 999"):
        read_model(bytes(data))


def _shared_shape_model(n_tensors: int, dims: int) -> bytes:
    """A hand-made flatbuffer whose n tensors all point at one tensor table with a
    ``dims``-long shape: tiny on disk, but n * dims values if each tensor were read."""
    out = bytearray(b"\0\0\0\0TFL3")

    def put(data: bytes) -> int:
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        return len(out) - len(data)

    def table(slots: int) -> int:
        # vtable first, then the table: soffset, then one 4-byte uoffset field per slot
        vtable = put(struct.pack(f"<HH{slots}H", 4 + 2 * slots, 4 + 4 * slots,
                                 *(4 + 4 * i for i in range(slots))))  # fmt: skip
        pos = put(b"\0" * (4 + 4 * slots))
        struct.pack_into("<i", out, pos, pos - vtable)
        return pos

    def link(at: int, target: int) -> None:
        struct.pack_into("<I", out, at, target - at)  # uoffsets point forward

    def vector(n: int, item: bytes = b"\0\0\0\0") -> int:
        return put(struct.pack("<I", n) + item * n)

    model = table(5)  # version, operator_codes, subgraphs, description, buffers
    struct.pack_into("<I", out, 0, model)
    subgraphs, buffers = vector(1), vector(1)
    link(model + 4 + 8, subgraphs)
    link(model + 4 + 16, buffers)
    link(buffers + 4, table(0))  # one empty Buffer (the sentinel)
    subgraph = table(1)  # tensors
    link(subgraphs + 4, subgraph)
    tensors = vector(n_tensors)
    link(subgraph + 4, tensors)
    tensor = table(1)  # shape
    for i in range(n_tensors):
        link(tensors + 4 + 4 * i, tensor)
    link(tensor + 4, vector(dims, struct.pack("<i", 2)))
    return bytes(out)


def test_hand_made_flatbuffer_parses():
    model = read_model(_shared_shape_model(3, 4))
    assert [t.shape for t in model.tensors] == [(2, 2, 2, 2)] * 3
    assert [t.dtype for t in model.tensors] == ["FLOAT32"] * 3


def test_shared_vectors_cannot_blow_up_memory():
    data = _shared_shape_model(5000, 5000)  # 40 kB on disk, 25M shape values if expanded
    with pytest.raises(ModelFileError, match="overlapping"):
        read_model(data)
