"""`inspect`: summaries, MAC counts a person can check, int8 checks, rich and JSON output."""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest
import tflite_models
from click.testing import CliRunner
from rich.console import Console

from edgeladder.commands.inspect import inspect
from edgeladder.errors import ModelFileError
from edgeladder.model.tflite import Operator, Subgraph, Tensor, TfliteModel, read_model
from edgeladder.model.tflite.summary import render, require_int8, summarize


def _macs_by_op(summary: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in summary["ops"]:
        out[op["op"]] = out.get(op["op"], 0) + op["macs"]
    return out


def test_mlp_macs_and_parameters():
    s = summarize(read_model(tflite_models.mlp_int8()))
    # Dense 20 -> 16 -> 4: 20*16 + 16*4 multiply-accumulates; softmax counts 0.
    assert [op["macs"] for op in s["ops"]] == [20 * 16, 16 * 4, 0]
    assert s["total_macs"] == 384
    # int8 weights (20*16 + 16*4 bytes) and int32 biases ((16 + 4) * 4 bytes)
    assert s["parameter_bytes"] == 20 * 16 + 16 * 4 + (16 + 4) * 4
    assert s["op_counts"] == {"FULLY_CONNECTED": 2, "SOFTMAX": 1}
    assert s["full_integer"] is True


def test_conv_macs():
    s = summarize(read_model(tflite_models.conv_int8()))
    conv = 10 * 10 * 8 * (3 * 3 * 1)  # valid 3x3 on 12x12x1 -> 10x10x8
    depthwise = 10 * 10 * 16 * (3 * 3)  # same padding, depth multiplier 2 -> 10x10x16
    dense = 1 * (5 * 5 * 32) * 3  # flatten(concat(max, max + avg)) = 800 features -> 3
    assert _macs_by_op(s) == {
        "CONV_2D": conv, "DEPTHWISE_CONV_2D": depthwise, "FULLY_CONNECTED": dense,
        "MAX_POOL_2D": 0, "AVERAGE_POOL_2D": 0, "ADD": 0, "CONCATENATION": 0, "SHAPE": 0,
        "STRIDED_SLICE": 0, "PACK": 0, "RESHAPE": 0,
    }  # fmt: skip
    assert s["total_macs"] == conv + depthwise + dense == 24000
    assert s["full_integer"] is True


def test_op_entries_carry_shapes():
    s = summarize(read_model(tflite_models.conv_int8()))
    conv = next(op for op in s["ops"] if op["op"] == "CONV_2D")
    assert [r["shape"] for r in conv["inputs"]] == [[1, 12, 12, 1], [8, 3, 3, 1], [8]]
    assert [r["dtype"] for r in conv["inputs"]] == ["INT8", "INT8", "INT32"]
    assert conv["outputs"][0]["shape"] == [1, 10, 10, 8]
    assert conv["options"]["padding"] == "VALID"


def test_io_quantization_matches_litert():
    from ai_edge_litert.interpreter import Interpreter

    path = tflite_models.mlp_int8()
    s = summarize(read_model(path))
    it = Interpreter(model_path=str(path))
    pairs = ((s["inputs"], it.get_input_details()), (s["outputs"], it.get_output_details()))
    for mine, theirs in pairs:
        assert len(mine) == len(theirs) == 1
        scale, zero_point = theirs[0]["quantization"]
        assert mine[0]["dtype"] == "INT8"
        assert mine[0]["shape"] == theirs[0]["shape"].tolist()
        assert mine[0]["zero_points"] == [zero_point]
        assert mine[0]["scales"][0] == pytest.approx(scale, rel=1e-7)


def test_float_model_is_not_full_integer():
    s = summarize(read_model(tflite_models.mlp_float()))
    assert s["full_integer"] is False
    assert s["total_macs"] == 6 * 5 + 5 * 2
    assert {t["dtype"] for t in s["tensors"]} == {"FLOAT32"}


def test_require_int8():
    require_int8(read_model(tflite_models.mlp_int8()))  # no error
    path = tflite_models.mlp_float()
    with pytest.raises(ModelFileError) as err:
        require_int8(read_model(path))
    assert str(err.value) == (
        f"{path}: is a float model (input tensor 'serving_default_features:0' is FLOAT32); "
        "int8 full-integer quantization is required — rebuild with `edgeladder build`"
    )


def _fake(op_name: str, shapes: dict[int, tuple[int, ...]], inputs, output: int) -> TfliteModel:
    tensors = tuple(Tensor(i, f"t{i}", shapes[i], "INT8", 0) for i in sorted(shapes))
    op = Operator(0, op_name, tuple(inputs), (output,), {})
    graph = Subgraph("main", tensors, (op,), (0,), (output,))
    return TfliteModel(3, "", (graph,), buffers=(), metadata={})


@pytest.mark.parametrize(
    ("op", "shapes", "macs"),
    [
        # batch -1 and 1 both count as 1; a real batch multiplies
        ("FULLY_CONNECTED", {0: (-1, 10), 1: (5, 10), 2: (-1, 5)}, 10 * 5),
        ("FULLY_CONNECTED", {0: (4, 10), 1: (5, 10), 2: (4, 5)}, 4 * 10 * 5),
        ("CONV_2D", {0: (-1, 6, 6, 3), 1: (2, 3, 3, 3), 2: (-1, 4, 4, 2)}, 4 * 4 * 2 * 3 * 3 * 3),
        ("DEPTHWISE_CONV_2D", {0: (1, 6, 6, 3), 1: (1, 3, 3, 3), 2: (1, 4, 4, 3)}, 4 * 4 * 3 * 9),
        ("ADD", {0: (1, 8), 1: (1, 8), 2: (1, 8)}, 0),  # elementwise: counted as 0
    ],
)
def test_mac_formulas(op, shapes, macs):
    s = summarize(_fake(op, shapes, inputs=[0, 1], output=2))
    assert s["total_macs"] == macs


def test_matrix_op_without_weights_is_a_model_error():
    model = _fake("FULLY_CONNECTED", {0: (1, 10), 1: (5, 10)}, inputs=[0, -1], output=1)
    with pytest.raises(ModelFileError, match="FULLY_CONNECTED"):
        summarize(model)


def test_render_prints_ops_totals_and_quantization():
    out = io.StringIO()
    render(summarize(read_model(tflite_models.conv_int8())), Console(file=out, width=250))
    text = out.getvalue()
    for word in ("CONV_2D", "DEPTHWISE_CONV_2D", "CONCATENATION", "24,000", "per-channel x8"):
        assert word in text
    assert "serving_default_image:0" in text
    assert "full integer: yes" in text


def test_cli_json_is_the_summary():
    path = tflite_models.mlp_int8()
    result = CliRunner().invoke(inspect, [str(path), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    # The CLI adds the board verdict (from a real compile) to the summary, op by op.
    board = shown.pop("board")
    assert board["runs_on_board"] is True and board["arena_bytes"] > 0
    assert [op.pop("board") for op in shown["ops"]] == [
        board["ops"][str(op["index"])] for op in shown["ops"]
    ]
    assert shown == json.loads(json.dumps(summarize(read_model(path))))


def test_cli_tables():
    result = CliRunner().invoke(inspect, [str(tflite_models.mlp_int8())])
    assert result.exit_code == 0, result.output
    assert "FULLY_CONNECTED" in result.output
    assert "384" in result.output


def test_cli_leaves_errors_to_main(tmp_path):
    # The command does not catch EdgeladderError: cli.main() turns it into one line.
    result = CliRunner().invoke(inspect, [str(tmp_path / "missing.tflite")])
    assert result.exit_code == 1
    assert isinstance(result.exception, ModelFileError)
    assert "file not found" in str(result.exception)
