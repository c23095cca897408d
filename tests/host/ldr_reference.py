"""A slow, obviously-correct host interpreter of the board's model file (test oracle).

It reads a compiled model with ``ladder.mformat`` and runs each op's documented arithmetic
(docs/model-format.md) with numpy and the compiler's gemmlowp replica. Comparing it with
TFLite Micro proves the compiler's parameters before the board engine exists; the engine's
own tests can compare against it too. Not the engine: no viper, no preallocation.
"""

from __future__ import annotations

import struct

import numpy as np

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ops.softmax import softmax_row
from edgeladder.model.fixedpoint import multiply_by_quantized_multiplier as mbqm1
from edgeladder.model.quantmath import multiply_by_quantized_multiplier as mbqm


def _i32(body: bytes, off: int, n: int) -> np.ndarray:
    return np.frombuffer(body, "<i4", n, off).astype(np.int64)


def _i8(body: bytes, off: int, n: int) -> np.ndarray:
    return np.frombuffer(body, np.int8, n, off).astype(np.int64)


def _requant(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, zp, lo, hi) -> np.ndarray:
    """Per-channel requantization along the last axis."""
    out = np.empty_like(acc)
    for c in range(acc.shape[-1]):
        out[..., c] = mbqm(acc[..., c], int(mult[c]), int(shift[c]))
    return np.clip(out + zp, lo, hi)


class Reference:
    def __init__(self, data: bytes) -> None:
        h = F.read_header(data)
        self.header = h
        self.body = bytes(F.read_body(data, h))
        self.arena_size = h.arena_size
        self.tensors = [
            struct.unpack_from(F.TENSOR_FMT, self.body, i * F.TENSOR_SIZE)
            for i in range(h.n_tensors)
        ]
        self.ops = []
        for _, code, values in F.ops(self.body, h):
            names = F.fields(code)
            named = dict(zip(names, values, strict=False))
            self.ops.append((code, named, list(values[len(names) :])))

    def run(self, x: np.ndarray) -> np.ndarray:
        arena = np.zeros(self.arena_size, np.int64)
        t_in, t_out = self.tensors[self.header.input_index], self.tensors[self.header.output_index]
        arena[t_in[0] : t_in[0] + t_in[1]] = np.asarray(x, np.int64).reshape(-1)
        for code, p, extra in self.ops:
            getattr(self, "_" + F.NAMES[code].lower())(arena, p, extra)
        out = arena[t_out[0] : t_out[0] + t_out[1]].astype(np.int8)
        return out.reshape(t_out[4 : 4 + t_out[2]])

    # --- ops ---------------------------------------------------------------------------------
    def _fully_connected(self, a, p, _):
        b, n_in, n_out = p["batches"], p["n_in"], p["n_out"]
        x = a[p["in"] : p["in"] + b * n_in].reshape(b, n_in)
        w = _i8(self.body, p["fc_w"], n_in * n_out).reshape(n_out, n_in)
        acc = x @ w.T + _i32(self.body, p["fc_b"], n_out)
        m, s = _i32(self.body, p["fc_m"], n_out), _i32(self.body, p["fc_s"], n_out)
        a[p["out"] : p["out"] + b * n_out] = _requant(
            acc, m, s, p["out_zp"], p["act_min"], p["act_max"]
        ).reshape(-1)

    def _conv(self, a, p, w, depth_mult):
        ih, iw, ic, oh, ow, oc = (p[k] for k in ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c"))
        kh, kw = p["k_h"], p["k_w"]
        x = a[p["in"] : p["in"] + ih * iw * ic].reshape(ih, iw, ic) + p["in_off"]
        acc = np.zeros((oh, ow, oc), np.int64)
        for oy in range(oh):
            for ox in range(ow):
                for ky in range(kh):
                    for kx in range(kw):
                        y = oy * p["stride_h"] - p["pad_h"] + ky * p["dil_h"]
                        xx = ox * p["stride_w"] - p["pad_w"] + kx * p["dil_w"]
                        if 0 <= y < ih and 0 <= xx < iw:  # padded taps are skipped
                            if depth_mult:
                                acc[oy, ox] += np.repeat(x[y, xx], depth_mult) * w[ky, kx]
                            else:
                                acc[oy, ox] += w[:, ky, kx, :] @ x[y, xx]
        return acc

    def _conv_2d(self, a, p, _):
        oc, kh, kw, ic = p["out_c"], p["k_h"], p["k_w"], p["in_c"]
        w = _i8(self.body, p["cv_w"], oc * kh * kw * ic).reshape(oc, kh, kw, ic)
        acc = self._conv(a, p, w, 0) + _i32(self.body, p["cv_b"], oc)
        m, s = _i32(self.body, p["cv_m"], oc), _i32(self.body, p["cv_s"], oc)
        out = _requant(acc, m, s, p["out_zp"], p["act_min"], p["act_max"])
        a[p["out"] : p["out"] + out.size] = out.reshape(-1)

    def _depthwise_conv_2d(self, a, p, _):
        oc, kh, kw = p["out_c"], p["k_h"], p["k_w"]
        w = _i8(self.body, p["dw_w"], kh * kw * oc).reshape(kh, kw, oc)
        acc = self._conv(a, p, w, p["depth_mult"]) + _i32(self.body, p["dw_b"], oc)
        m, s = _i32(self.body, p["dw_m"], oc), _i32(self.body, p["dw_s"], oc)
        out = _requant(acc, m, s, p["out_zp"], p["act_min"], p["act_max"])
        a[p["out"] : p["out"] + out.size] = out.reshape(-1)

    def _pool(self, a, p, average):
        ih, iw, c, oh, ow = (p[k] for k in ("in_h", "in_w", "c", "out_h", "out_w"))
        x = a[p["in"] : p["in"] + ih * iw * c].reshape(ih, iw, c)
        out = np.zeros((oh, ow, c), np.int64)
        for oy in range(oh):
            for ox in range(ow):
                y0, x0 = oy * p["stride_h"] - p["pad_h"], ox * p["stride_w"] - p["pad_w"]
                win = x[max(y0, 0) : min(y0 + p["f_h"], ih), max(x0, 0) : min(x0 + p["f_w"], iw)]
                win = win.reshape(-1, c)
                if average:
                    n, s = len(win), win.sum(axis=0)
                    out[oy, ox] = np.where(s > 0, (s + n // 2) // n, -((-s + n // 2) // n))
                else:
                    out[oy, ox] = win.max(axis=0)
        out = np.clip(out, p["act_min"], p["act_max"])
        a[p["out"] : p["out"] + out.size] = out.reshape(-1)

    def _average_pool_2d(self, a, p, _):
        self._pool(a, p, True)

    def _max_pool_2d(self, a, p, _):
        self._pool(a, p, False)

    def _mean(self, a, p, _):
        n, c = p["h"] * p["w"], p["c"]
        s = a[p["in"] : p["in"] + n * c].reshape(n, c).sum(axis=0)
        if p["mode"] == 1:
            out = np.sign(s) * (np.abs(s) // n)  # C division truncates toward zero
        else:
            out = mbqm(s - p["in_zp"] * n, p["mult"], p["shift"]) + p["out_zp"]
        a[p["out"] : p["out"] + c] = np.clip(out, -128, 127)

    def _binary(self, a, p):
        x1 = a[p["in"] : p["in"] + p["n"]] + p["in_off"]
        x2 = a[p["in2"] : p["in2"] + p["n2"]] + p["in2_off"]
        return x1, np.broadcast_to(x2, x1.shape)

    def _add(self, a, p, _):
        x1, x2 = self._binary(a, p)
        s1 = mbqm(x1 << p["left_shift"], p["m1"], p["s1"])
        s2 = mbqm(x2 << p["left_shift"], p["m2"], p["s2"])
        out = mbqm(s1 + s2, p["m_out"], p["s_out"]) + p["out_zp"]
        a[p["out"] : p["out"] + p["n"]] = np.clip(out, p["act_min"], p["act_max"])

    def _mul(self, a, p, _):
        x1, x2 = self._binary(a, p)
        out = mbqm(x1 * x2, p["mult"], p["shift"]) + p["out_zp"]
        a[p["out"] : p["out"] + p["n"]] = np.clip(out, p["act_min"], p["act_max"])

    def _copy(self, a, p, _):
        a[p["out"] : p["out"] + p["n"]] = a[p["in"] : p["in"] + p["n"]].copy()

    def _pad(self, a, p, _):
        dims = [p[f"d{i}"] for i in range(4)]
        x = a[p["in"] : p["in"] + int(np.prod(dims))].reshape(dims)
        pads = [(p[f"b{i}"], p[f"a{i}"]) for i in range(4)]
        out = np.pad(x, pads, constant_values=p["value"])
        a[p["out"] : p["out"] + out.size] = out.reshape(-1)

    def _concatenation(self, a, p, extra):
        parts = []
        for k in range(p["n_inputs"]):
            off, axis = extra[2 * k], extra[2 * k + 1]
            parts.append(a[off : off + p["outer"] * axis * p["inner"]].reshape(p["outer"], -1))
        out = np.concatenate(parts, axis=1)
        a[p["out"] : p["out"] + out.size] = out.reshape(-1)

    def _softmax(self, a, p, _):
        table = [int(v) for v in _i32(self.body, p["sm_lut"], 256)]
        rows, depth = p["rows"], p["depth"]
        x = a[p["in"] : p["in"] + rows * depth].reshape(rows, depth)
        out = np.stack([softmax_row(r, table) for r in x]).astype(np.int64)
        a[p["out"] : p["out"] + rows * depth] = out.reshape(-1)

    def _lut(self, a, p, _):
        lut = _i8(self.body, p["lut_lut"], 256)
        a[p["out"] : p["out"] + p["n"]] = lut[a[p["in"] : p["in"] + p["n"]] + 128]


__all__ = ["Reference", "mbqm1"]
