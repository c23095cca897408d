"""`convert`: C arrays that compile as C and C++ and give back the exact model bytes, and a
MicroPython module that does the same under the real micropython binary and mpy-cross."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest
import tflite_models
from click.testing import CliRunner

from edgeladder.commands.convert import convert
from edgeladder.errors import EdgeladderError, ModelFileError
from edgeladder.model.carray import (
    default_name,
    export_model,
    write_c_array,
    write_micropython_module,
)

MAIN_C = """\
#include <stdint.h>
#include <stdio.h>
#include "{name}.h"

/* Write the embedded model back to a file: the test compares it with the .tflite. */
int main(int argc, char **argv) {{
  if (argc != 2) return 2;
  if ({name}_len != {macro}) return 3;
  if ((uintptr_t){name} % 16 != 0) return 4; /* TFLite Micro needs an aligned model */
  FILE *f = fopen(argv[1], "wb");
  if (f == NULL) return 5;
  size_t n = fwrite({name}, 1, {name}_len, f);
  return fclose(f) == 0 && n == {name}_len ? 0 : 6;
}}
"""
WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wpedantic"]


def _tool(name: str) -> str:
    # Prefer the venv's binaries (micropython, mpy-cross), then PATH.
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found is not None, f"{name} is not installed; run `make test` to set up .venv"
    return found


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("compiler", "flags"),
    [("gcc", ["-std=c11"]), ("g++", ["-x", "c++", "-std=c++17"])],
)
def test_c_array_compiles_and_round_trips(tmp_path, compiler, flags):
    model = tflite_models.conv_int8()
    header, source = write_c_array(model, tmp_path / "out")
    assert (header.name, source.name) == ("conv_int8_model.h", "conv_int8_model.c")
    main = tmp_path / "main.c"
    main.write_text(MAIN_C.format(name="conv_int8_model", macro="CONV_INT8_MODEL_LEN"))
    exe = tmp_path / "roundtrip"
    cmd = [_tool(compiler), *flags, *WARNINGS, "-I", str(header.parent), str(main), str(source)]
    subprocess.run([*cmd, "-o", str(exe)], check=True, capture_output=True, text=True)
    back = tmp_path / "back.tflite"
    subprocess.run([str(exe), str(back)], check=True)
    assert back.read_bytes() == model.read_bytes()


def test_c_source_also_compiles_alone(tmp_path):
    # The brief's exact commands: each file on its own, as a firmware build would.
    _, source = write_c_array(tflite_models.mlp_int8(), tmp_path, name="mlp")
    for cmd in (["gcc", "-std=c11"], ["g++", "-x", "c++", "-std=c++17"]):
        obj = tmp_path / f"{cmd[0]}.o"
        args = [_tool(cmd[0]), *cmd[1:], *WARNINGS, "-c", str(source), "-o", str(obj)]
        subprocess.run(args, check=True, capture_output=True, text=True)


def test_header_describes_the_model(tmp_path):
    model = tflite_models.conv_int8()
    header, source = write_c_array(model, tmp_path)
    text = header.read_text()
    size = len(model.read_bytes())
    assert f"sha256: {hashlib.sha256(model.read_bytes()).hexdigest()}" in text
    assert f"#define CONV_INT8_MODEL_LEN {size}u" in text
    assert "extern const unsigned char conv_int8_model[];" in text
    assert "extern const unsigned int conv_int8_model_len;" in text
    assert "#include <stddef.h>" in text and 'extern "C"' in text
    assert "CONV_2D x1" in text and "DEPTHWISE_CONV_2D x1" in text
    assert "input 0: serving_default_image:0: INT8 [1x12x12x1] scale=" in text
    assert "alignas(16) const unsigned char conv_int8_model[]" in source.read_text()
    # 12 bytes per line
    rows = [line for line in source.read_text().splitlines() if line.startswith("  0x")]
    assert all(row.count("0x") == 12 for row in rows[:-1])
    assert sum(row.count("0x") for row in rows) == size


def _micropython(code: str) -> str:
    result = subprocess.run(
        [_tool("micropython"), "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_micropython_module_round_trips(tmp_path):
    model = tflite_models.mlp_int8()
    data = model.read_bytes()
    module = write_micropython_module(model, tmp_path / "mp")
    assert module.name == "mlp_int8_model.py"
    assert (tmp_path / "mp" / "manifest.py").read_text().endswith('module("mlp_int8_model.py")\n')
    back = tmp_path / "back.bin"
    out = _micropython(
        f"import sys; sys.path.append({str(module.parent)!r}); import mlp_int8_model as m; "
        "import hashlib, binascii; "
        f"open({str(back)!r}, 'wb').write(m.MODEL); "
        "print(binascii.hexlify(hashlib.sha256(m.MODEL).digest()).decode(), m.MODEL_LEN, "
        "m.MODEL_SHA256)"
    )
    digest = hashlib.sha256(data).hexdigest()
    assert out.split() == [digest, str(len(data)), digest]
    assert back.read_bytes() == data

    # CPython imports the same file.
    spec = importlib.util.spec_from_file_location("mlp_int8_model", module)
    cpython = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpython)
    assert (data, len(data)) == (cpython.MODEL, cpython.MODEL_LEN)


def test_module_compiles_with_mpy_cross(tmp_path):
    model = tflite_models.mlp_int8()
    module = write_micropython_module(model, tmp_path / "src")
    mpy_cross = _tool("mpy-cross")
    xtensa = tmp_path / "xtensawin.mpy"
    subprocess.run([mpy_cross, "-march=xtensawin", "-o", str(xtensa), str(module)], check=True)
    assert xtensa.stat().st_size > len(model.read_bytes())
    # Bytecode .mpy (the unix port's arch) imports without the source and keeps the bytes.
    lib = tmp_path / "lib"
    lib.mkdir()
    subprocess.run([mpy_cross, "-o", str(lib / "mlp_int8_model.mpy"), str(module)], check=True)
    out = _micropython(
        f"import sys; sys.path.append({str(lib)!r}); import mlp_int8_model as m; "
        "import hashlib, binascii; "
        "print(binascii.hexlify(hashlib.sha256(m.MODEL).digest()).decode())"
    )
    assert out.strip() == hashlib.sha256(model.read_bytes()).hexdigest()


def test_manifest_collects_models_once(tmp_path):
    write_micropython_module(tflite_models.mlp_int8(), tmp_path)
    write_micropython_module(tflite_models.conv_int8(), tmp_path)
    write_micropython_module(tflite_models.mlp_int8(), tmp_path)
    lines = [line for line in (tmp_path / "manifest.py").read_text().splitlines()]
    assert [line for line in lines if line.startswith("module(")] == [
        'module("mlp_int8_model.py")',
        'module("conv_int8_model.py")',
    ]


def test_float_model_is_refused_and_nothing_is_written(tmp_path):
    path = tflite_models.mlp_float()
    out = tmp_path / "out"
    with pytest.raises(ModelFileError, match="is a float model") as err:
        export_model(path, c_array=out, micropython=out)
    assert str(err.value).startswith(f"{path}: ")
    with pytest.raises(ModelFileError):
        write_c_array(path, out)
    with pytest.raises(ModelFileError):
        write_micropython_module(path, out)
    assert _files(out) == []


def test_float_model_with_allow_float(tmp_path):
    header, source = write_c_array(tflite_models.mlp_float(), tmp_path, allow_float=True)
    assert "FLOAT32" in header.read_text()
    assert source.exists()


@pytest.mark.parametrize("cut", [0, 5, 200])
def test_corrupt_model_is_refused_and_nothing_is_written(tmp_path, cut):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(tflite_models.mlp_int8().read_bytes()[:cut])
    out = tmp_path / "out"
    with pytest.raises(ModelFileError):
        export_model(bad, c_array=out, micropython=out)
    assert _files(out) == []


def test_names(tmp_path):
    assert default_name("models/digits_tiny.tflite") == "digits_tiny_model"
    assert default_name("3-axis.v2.tflite") == "m_3_axis_v2_model"
    assert default_name("kws_model.tflite") == "kws_model"
    model = tflite_models.mlp_int8()
    header, _ = write_c_array(model, tmp_path / "ok", name="g_kws")
    assert header.name == "g_kws.h"
    for bad in ("int", "9lives", "a-b", "", "__x", "_Upper", "name with space"):
        with pytest.raises(EdgeladderError, match="is not a usable"):
            write_c_array(model, tmp_path / "bad", name=bad)
    with pytest.raises(EdgeladderError, match="Python module name"):
        write_micropython_module(model, tmp_path / "bad", name="lambda")
    assert _files(tmp_path / "bad") == []


def test_no_temporary_files_are_left(tmp_path):
    export_model(tflite_models.mlp_int8(), c_array=tmp_path, micropython=tmp_path)
    assert _files(tmp_path) == sorted(
        ["manifest.py", "mlp_int8_model.c", "mlp_int8_model.h", "mlp_int8_model.py"]
    )


def test_cli_convert_json(tmp_path):
    model = tflite_models.mlp_int8()
    args = [str(model), "--c-array", str(tmp_path / "c"), "--micropython", str(tmp_path / "mp")]
    result = CliRunner().invoke(convert, [*args, "--name", "kws", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert report["bytes"] == len(model.read_bytes())
    written = {Path(w["path"]).name: w["bytes"] for w in report["written"]}
    assert set(written) == {"kws.h", "kws.c", "kws.py", "manifest.py"}
    assert written["kws.c"] == (tmp_path / "c" / "kws.c").stat().st_size


def test_cli_convert_text_and_errors(tmp_path):
    runner = CliRunner()
    model = tflite_models.mlp_int8()
    result = runner.invoke(convert, [str(model), "--c-array", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(model.read_bytes()).hexdigest() in result.output
    assert "mlp_int8_model.h" in result.output

    result = runner.invoke(convert, [str(model)])
    assert result.exit_code == 2 and "--c-array" in result.output

    result = runner.invoke(convert, [str(tflite_models.mlp_float()), "--c-array", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, ModelFileError)
    args = [str(tflite_models.mlp_float()), "--c-array", str(tmp_path), "--allow-float"]
    assert runner.invoke(convert, args).exit_code == 0
