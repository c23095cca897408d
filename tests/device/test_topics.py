"""The MQTT topic tree (ladder.topics) on both runtimes: built and parsed in one module, and a
device id has exactly one spelling, 8 lower-case hex digits.

``int(s, 16)`` takes "0x000001", "0000_001", " 0000001", "+0000001", upper-case hex, even
full-width or Arabic-Indic digits as device 1; a client whose id is one of those would pass a
broker's ``%c`` ACL and speak as device 1. ladder.topics.device_id refuses every one of them,
under CPython (with hypothesis) and under the real micropython binary (the same verdicts).
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_corpus import BAD_ID_SPELLINGS

from ladder import topics, wire

SPELLINGS = BAD_ID_SPELLINGS
HEX = "0123456789abcdef"


def _topic(level: str, direction: str = topics.UP, kind: str = "esc") -> str:
    # a well-formed topic with `level` where the id goes (built from a good one: no "el/" here)
    good = topics.device_topic("f1", 0x5A5A5A5A, direction, kind)
    return good.replace("5a5a5a5a", level, 1)


@pytest.mark.parametrize("level", SPELLINGS)
def test_every_other_spelling_of_an_id_is_refused(level):
    with pytest.raises(ValueError, match="topic: "):
        topics.device_id(level)
    with pytest.raises(ValueError, match="topic: "):
        topics.parse(_topic(level))


@settings(max_examples=5000, deadline=None, derandomize=True)
@given(st.text(alphabet=HEX + "ABCDEFxX_ +-\t\n\uff10\u0660g/#", min_size=0, max_size=10))
def test_device_id_accepts_exactly_eight_lower_case_hex_digits(text):
    ok = len(text) == 8 and all(c in HEX for c in text)
    try:
        got = topics.device_id(text)
    except ValueError:
        assert not ok, text
    else:
        assert ok and got == int(text, 16), text


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(st.integers(0, 0xFFFFFFFF), st.sampled_from(sorted(topics.KIND.values())))
def test_built_topics_parse_back(device, kind):
    for direction in (topics.UP, topics.DOWN):
        t = topics.device_topic("fleet-a", device, direction, kind)
        assert topics.parse(t) == ("fleet-a", topics.DEV, device, direction, kind)
    t = topics.tier_topic("fleet-a", "gateway", topics.STATUS)
    assert topics.parse(t) == ("fleet-a", topics.TIER, "gateway", topics.STATUS, None)


def test_other_shapes_are_refused():
    good = topics.device_topic("f1", 1, topics.UP, "esc")
    for bad in (
        good + "/more", good.rsplit("/", 1)[0], good.replace("/up/", "/sideways/"),
        good.replace("f1", "", 1), "x" + good, topics.tier_topic("f1", "", topics.IN),
        topics.tier_topic("f1", "gw", topics.IN) + "/x", topics.device_topic("f1", 1, "up", ""),
    ):  # fmt: skip
        with pytest.raises(ValueError, match="topic: "):
            topics.parse(bad)
    for bad in (-1, 0x100000000):
        with pytest.raises(ValueError, match="topic: "):
            topics.device_level(bad)


def test_topics_are_built_once_with_the_id_as_the_board_connects():
    assert topics.device_topic("demo", 0xABCD, topics.DOWN, "res").split("/")[3] == "0000abcd"
    assert topics.device_level(0xABCD) == "0000abcd"
    assert topics.KIND[wire.ESCALATE] == "esc"


BOARD_SCRIPT = r"""
import json
from ladder import topics
def verdict(f, level):
    try:
        v = f(level)
        return v if isinstance(v, int) else v[2]
    except ValueError as e:
        return "refused" if str(e).startswith("topic: ") else "other " + str(e)
with open(%(path)r) as cases:  # one JSON string a line: the whole list would not fit the heap
    for line in cases:
        level = json.loads(line)
        a = verdict(topics.device_id, level)
        b = verdict(topics.parse, %(prefix)r + level + "/up/esc")
        print(json.dumps([a, b]))
"""


def test_micropython_gives_the_same_verdicts(upy, tmp_path):
    rng = random.Random(9)
    alphabet = HEX + "ABCDEFxX_ +-\uff10\u0660"
    cases = SPELLINGS + [f"{rng.getrandbits(32):08x}" for _ in range(300)]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(6, 9))) for _ in range(700)]
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    prefix = _topic("X").split("X")[0]
    res = upy(BOARD_SCRIPT % {"path": str(path), "prefix": prefix}, timeout=120).check()
    got = [json.loads(line) for line in res.stdout.strip().splitlines()]
    want = []
    for level in cases:
        ok = len(level) == 8 and all(c in HEX for c in level)
        want.append([int(level, 16), int(level, 16)] if ok else ["refused", "refused"])
    assert got == want
    assert sum(v[0] != "refused" for v in want) >= 300  # valid ids were tried too
