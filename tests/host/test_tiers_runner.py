"""tiers.runner on the real digits tiers: the batch-patched model gives exactly the unpatched
model's int8 outputs and logits, at every batch size; a model that cannot be patched falls back
to single invokes (and says so); the serving code path never imports TensorFlow."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgeladder.model.litert import Int8Runner
from edgeladder.model.tflite.reader import read_model
from edgeladder.serve.runner import BatchRunner, batch_patch, buckets_for
from edgeladder_sim.fixtures.ladder import TIERS, digits_inputs
from edgeladder_sim.fixtures.ladder import tflite_path as tflite


@pytest.fixture(scope="module")
def inputs(digits_build):
    x, _ = digits_inputs(digits_build.out, 100)
    return x


@pytest.mark.parametrize("tier", TIERS)
def test_batched_outputs_and_logits_equal_single_invokes_byte_for_byte(digits_build, inputs, tier):
    path = tflite(digits_build.out, tier)
    runner = BatchRunner.load(path, max_batch=16)
    assert runner.batched, runner.note
    assert runner.buckets == (1, 2, 4, 8, 16)
    single = Int8Runner.from_bytes(path.read_bytes(), tier)
    want_out, want_logits = single.run_int8_logits(inputs)
    # every bucket, partly filled ones (padding), and more than the largest bucket (chunks)
    for n in (1, 2, 3, 4, 5, 8, 13, 16, 17, 40, 100):
        out, logits = runner.run(inputs[:n])
        assert out.dtype == np.int8 and logits.dtype == np.int8
        assert out.tobytes() == want_out[:n].tobytes(), (tier, n)
        assert logits.tobytes() == want_logits[:n].tobytes(), (tier, n)


@pytest.mark.parametrize("tier", TIERS)
def test_the_patch_changes_only_reshape_batch_entries_and_is_needed(digits_build, tier):
    data = tflite(digits_build.out, tier).read_bytes()
    patched, why = batch_patch(data)
    assert patched is not None, why
    diff = [i for i in range(len(data)) if data[i] != patched[i]]
    assert diff, "nothing patched"
    # each changed spot is one int32 that was 1 and is now -1
    starts = sorted({i - (i - diff[0]) % 4 for i in diff})
    for s in starts:
        assert struct.unpack_from("<i", data, s)[0] == 1
        assert struct.unpack_from("<i", patched, s)[0] == -1
    m = read_model(patched)
    shapes = [m.tensors[op.inputs[1]].numpy().tolist() for op in m.ops if op.op_name == "RESHAPE"]
    assert shapes and all(s[0] == -1 for s in shapes)
    # and without it LiteRT cannot run a batch of 4 (the problem the patch solves)
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [4, 8, 8, 1])
    with pytest.raises(RuntimeError, match="num_input_elements != num_output_elements"):
        it.allocate_tensors()


def test_a_model_that_cannot_be_patched_runs_single_invokes_and_says_why(digits_build, inputs):
    # RESHAPE to [1, -1] is a valid model; patched to [-1, -1] it is not: LiteRT refuses it.
    data = bytearray(tflite(digits_build.out, "tiny").read_bytes())
    patched, _ = batch_patch(bytes(data))
    spot = next(i for i in range(0, len(data), 4) if data[i : i + 4] != patched[i : i + 4])
    assert struct.unpack_from("<2i", data, spot) == (1, 64)
    struct.pack_into("<i", data, spot + 4, -1)
    runner = BatchRunner.load(bytes(data), max_batch=8)
    assert not runner.batched
    assert "cannot resize" in runner.note
    single = Int8Runner.from_bytes(bytes(data))
    out, logits = runner.run(inputs[:11])
    want_out, want_logits = single.run_int8_logits(inputs[:11])
    assert out.tobytes() == want_out.tobytes() and logits.tobytes() == want_logits.tobytes()


def test_buckets_cover_max_batch():
    assert buckets_for(1) == (1,)
    assert buckets_for(5) == (1, 2, 4, 8)
    assert buckets_for(16) == (1, 2, 4, 8, 16)
    assert buckets_for(32) == (1, 2, 4, 8, 16, 32)


def test_serving_never_imports_tensorflow(digits_build):
    # A Pi installs edgeladder[serve] without TensorFlow: the whole serve path must run so.
    code = (
        "import sys\n"
        "import edgeladder.commands.serve, edgeladder.serve.app, edgeladder.serve.stage\n"
        "import edgeladder.serve.http, edgeladder.serve.process\n"
        "import edgeladder.serve.reload, edgeladder.serve.links.mqtt\n"
        "import edgeladder.serve.links.serial\n"
        "from edgeladder.serve.runner import BatchRunner\n"
        f"BatchRunner.load({str(tflite(digits_build.out, 'large'))!r}).run\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
