# ladder.wire: the messages between a board and the host tiers, defined once. The board packs and
# unpacks with this module under MicroPython; the host imports the very same file under CPython.
# docs/protocol.md explains every field. Binary, little-endian, versioned.
#
# Every message = header + body. Header: protocol version (u8), message type (u8), device id (u32),
# sequence number (u32, per sender, so that a receiver can drop duplicates and match replies).
# A receiver checks the version, the type and the exact body size before it reads a field, and
# raises ValueError("wire: ...") otherwise: the caller counts the message as dropped, with the
# reason, and goes on. Nothing here trusts the wire (no asserts: MicroPython drops them).
#
# Packing writes into the caller's buffer (struct.pack_into) and returns the length, so a board
# sends without allocating; unpacking returns a tuple (one small allocation per received message).

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


VERSION = const(1)

HEADER_FMT = "<BBII"  # version, type, device id, sequence number
HEADER_SIZE = const(10)

# Message types. Ranges are kept for what later work adds: 0x10-0x1f telemetry, 0x20-0x2f OTA,
# 0x30-0x3f federated learning, 0x40-0x4f commands from the host.
HELLO = const(1)  # device -> host: "I am here, with this model version" (MQTT: retained)
HEARTBEAT = const(2)  # device -> host: liveness and counters
ESCALATE = const(3)  # device or tier -> next tier: an input the sender was unsure about
RESULT = const(4)  # tier -> device: the answer to an escalation
REJECT = const(5)  # tier -> device: the escalation will not be answered; fall back now
ANSWER = const(6)  # device -> its actuator or test harness: the final answer for one input

# Bodies. ESCALATE ends with top-k (label u8, int8 score + 128 as u8) pairs, then the int8 input.
ESCALATE_FMT = "<IHHBBH"  # model version, deadline ms left, confidence Q16, stage, k, input bytes
ESCALATE_FIXED = const(12)
# ref (the escalation's seq), model version, label, confidence Q16, source, stage
RESULT_FMT = "<IIHHBB"
RESULT_SIZE = const(14)
REJECT_FMT = "<IBH"  # ref, reason, retry after ms
REJECT_SIZE = const(7)
HELLO_FMT = "<IBBBBI"  # model version, firmware major, minor, patch, stage count, heap free
HELLO_SIZE = const(12)
HEARTBEAT_FMT = "<IIIIII"  # uptime s, heap free, answered, escalated, fallbacks, dropped
HEARTBEAT_SIZE = const(24)
ANSWER_FMT = "<IHHBBI"  # ref (input frame index), label, confidence Q16, source, stage, latency us
ANSWER_SIZE = const(14)

# Where an answer was made. Every answer carries one.
EDGE = const(0)
GATEWAY = const(1)
CLOUD = const(2)
EDGE_FALLBACK = const(3)
SOURCES = ("edge", "gateway", "cloud", "edge_fallback")

# Why a tier rejects an escalation.
QUEUE_FULL = const(1)
DEADLINE = const(2)
WRONG_VERSION = const(3)
UNKNOWN_DEVICE = const(4)
BAD_INPUT = const(5)
SHUTTING_DOWN = const(6)
REASONS = ("", "queue_full", "deadline", "wrong_version", "unknown_device", "bad_input", "shutdown")

MAX_TOPK = const(16)
MAX_INPUT = const(4096)
MAX_MESSAGE = const(HEADER_SIZE + ESCALATE_FIXED + 2 * MAX_TOPK + MAX_INPUT)

# type -> exact body size; ESCALATE is variable and checked on its own.
_FIXED = {
    HELLO: HELLO_SIZE,
    HEARTBEAT: HEARTBEAT_SIZE,
    RESULT: RESULT_SIZE,
    REJECT: REJECT_SIZE,
    ANSWER: ANSWER_SIZE,
}


def _q16(c):
    # Q16 1.0 (65536) does not fit the u16 on the wire: it travels as 65535.
    return 65535 if c > 65535 else c


def _header(buf, mtype, device, seq):
    struct.pack_into(HEADER_FMT, buf, 0, VERSION, mtype, device, seq)


def pack_escalate(buf, device, seq, model_version, deadline_ms, confidence, stage, topk, data):
    """ESCALATE into buf; topk: bytes-like of k (label, score u8) pairs; data: the int8 input."""
    k = len(topk) // 2
    n = len(data)
    end = HEADER_SIZE + ESCALATE_FIXED + 2 * k + n
    if k > MAX_TOPK or n > MAX_INPUT or end > len(buf):
        raise ValueError("wire: escalation too large")
    _header(buf, ESCALATE, device, seq)
    struct.pack_into(
        ESCALATE_FMT, buf, HEADER_SIZE, model_version, deadline_ms, _q16(confidence), stage, k, n
    )
    o = HEADER_SIZE + ESCALATE_FIXED
    buf[o : o + 2 * k] = topk
    buf[o + 2 * k : end] = data
    return end


def pack_topk(dst, scores, idx, k):
    """An ESCALATE's top-k pairs into dst[:2k]: (label, int8 score + 128) for the labels idx[:k]
    (best first, as ladder.quant.top_k_into leaves them). scores: int8 values, signed (array('b'),
    a list) or two's complement (a bytearray). Used by the board's cascade and the host tiers."""
    for j in range(k):
        c = idx[j]
        s = scores[c]
        if s > 127:
            s -= 256
        dst[2 * j] = c
        dst[2 * j + 1] = s + 128


def pack_result(buf, device, seq, ref, model_version, label, confidence, source, stage):
    _header(buf, RESULT, device, seq)
    struct.pack_into(
        RESULT_FMT, buf, HEADER_SIZE, ref, model_version, label, _q16(confidence), source, stage
    )
    return HEADER_SIZE + RESULT_SIZE


def pack_reject(buf, device, seq, ref, reason, retry_ms=0):
    _header(buf, REJECT, device, seq)
    struct.pack_into(REJECT_FMT, buf, HEADER_SIZE, ref, reason, retry_ms)
    return HEADER_SIZE + REJECT_SIZE


def pack_hello(buf, device, seq, model_version, fw, stages, heap_free):
    _header(buf, HELLO, device, seq)
    struct.pack_into(
        HELLO_FMT, buf, HEADER_SIZE, model_version, fw[0], fw[1], fw[2], stages, heap_free
    )
    return HEADER_SIZE + HELLO_SIZE


def pack_heartbeat(buf, device, seq, uptime_s, heap_free, answered, escalated, fallbacks, dropped):
    _header(buf, HEARTBEAT, device, seq)
    struct.pack_into(
        HEARTBEAT_FMT, buf, HEADER_SIZE, uptime_s, heap_free, answered, escalated, fallbacks,
        dropped,
    )  # fmt: skip
    return HEADER_SIZE + HEARTBEAT_SIZE


def pack_answer(buf, device, seq, ref, label, confidence, source, stage, latency_us):
    _header(buf, ANSWER, device, seq)
    struct.pack_into(
        ANSWER_FMT, buf, HEADER_SIZE, ref, label, _q16(confidence), source, stage, latency_us
    )
    return HEADER_SIZE + ANSWER_SIZE


def header(msg):
    """(type, device, seq) of a message, after checking its version, type and size."""
    n = len(msg)
    if n < HEADER_SIZE:
        raise ValueError("wire: short message (%d bytes)" % n)
    ver, mtype, device, seq = struct.unpack_from(HEADER_FMT, msg, 0)
    if ver != VERSION:
        raise ValueError("wire: version %d, expected %d" % (ver, VERSION))
    body = n - HEADER_SIZE
    if mtype == ESCALATE:
        if body < ESCALATE_FIXED:
            raise ValueError("wire: short escalation")
        k = msg[HEADER_SIZE + 9]
        m = msg[HEADER_SIZE + 10] | msg[HEADER_SIZE + 11] << 8
        if k > MAX_TOPK or m > MAX_INPUT or body != ESCALATE_FIXED + 2 * k + m:
            raise ValueError("wire: escalation size does not match its k and input length")
    else:
        want = _FIXED.get(mtype)
        if want is None:
            raise ValueError("wire: unknown message type %d" % mtype)
        if body != want:
            raise ValueError("wire: type %d body is %d bytes, expected %d" % (mtype, body, want))
    return mtype, device, seq


def unpack_escalate(msg):
    """(model version, deadline ms, confidence, stage, k, input length, topk offset, input offset).

    The top-k pairs and the input stay in msg: slice or memoryview them at the offsets."""
    mv, dl, conf, stage, k, n = struct.unpack_from(ESCALATE_FMT, msg, HEADER_SIZE)
    o = HEADER_SIZE + ESCALATE_FIXED
    return mv, dl, conf, stage, k, n, o, o + 2 * k


def unpack_result(msg):
    """(ref, model version, label, confidence Q16, source, stage)."""
    return struct.unpack_from(RESULT_FMT, msg, HEADER_SIZE)


def unpack_reject(msg):
    """(ref, reason, retry after ms)."""
    return struct.unpack_from(REJECT_FMT, msg, HEADER_SIZE)


def unpack_hello(msg):
    """(model version, fw major, fw minor, fw patch, stage count, heap free)."""
    return struct.unpack_from(HELLO_FMT, msg, HEADER_SIZE)


def unpack_heartbeat(msg):
    """(uptime s, heap free, answered, escalated, fallbacks, dropped)."""
    return struct.unpack_from(HEARTBEAT_FMT, msg, HEADER_SIZE)


def unpack_answer(msg):
    """(ref, label, confidence Q16, source, stage, latency us)."""
    return struct.unpack_from(ANSWER_FMT, msg, HEADER_SIZE)
