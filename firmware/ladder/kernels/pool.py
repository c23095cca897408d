# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# AVERAGE_POOL_2D and MAX_POOL_2D, NHWC, batch 1, as TFLite Micro's reference_integer_ops pooling:
# the window is clipped to the input (padding never counts), the average rounds half away from
# zero over the taps actually read, and both clamp to the fused activation. Output keeps the
# input's quantization. Sums: f_h * f_w * 128 < 2**31 for any window.

import micropython


@micropython.viper
def _pool(arena, p, is_max: int):
    one = 1
    H = one << 31
    P = ptr32(p)
    A = int(ptr8(arena))
    X = ptr8(A + int(P[0]))
    Y = ptr8(A + int(P[1]))
    in_h = int(P[2])
    in_w = int(P[3])
    c = int(P[4])
    out_h = int(P[5])
    out_w = int(P[6])
    f_h = int(P[7])
    f_w = int(P[8])
    sh = int(P[9])
    sw = int(P[10])
    ph = int(P[11])
    pw = int(P[12])
    lo = int((P[13] ^ H) - H)
    hi = int((P[14] ^ H) - H)
    o = 0
    oy = 0
    while oy < out_h:
        y0 = oy * sh - ph
        ya = 0 if y0 >= 0 else 0 - y0  # filter rows [ya, yb) fall inside the input
        yb = in_h - y0 if in_h - y0 < f_h else f_h
        ox = 0
        while ox < out_w:
            x0 = ox * sw - pw
            xa = 0 if x0 >= 0 else 0 - x0
            xb = in_w - x0 if in_w - x0 < f_w else f_w
            ch = 0
            while ch < c:
                acc = 0
                if is_max:
                    acc = -128
                y = ya
                while y < yb:
                    base = ((y0 + y) * in_w + x0) * c + ch
                    x = xa
                    while x < xb:
                        v = (X[base + x * c] ^ 128) - 128
                        if is_max:
                            if v > acc:
                                acc = v
                        else:
                            acc += v
                        x += 1
                    y += 1
                if not is_max:
                    n = (yb - ya) * (xb - xa)  # the compiler rejects windows with no taps
                    if n > 0:
                        half = n >> 1
                        # C division truncates toward zero: divide magnitudes.
                        if acc > 0:
                            acc = (acc + half) // n
                        else:
                            acc = 0 - ((half - acc) // n)
                if acc < lo:
                    acc = lo
                elif acc > hi:
                    acc = hi
                Y[o] = acc
                o += 1
                ch += 1
            ox += 1
        oy += 1


def average_pool_2d(arena, body, p, q):
    _pool(arena, p, 0)


def max_pool_2d(arena, body, p, q):
    _pool(arena, p, 1)
