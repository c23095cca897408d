# ladder.topics: the MQTT topic tree, built and parsed here and nowhere else. The board builds its
# topics with this module under MicroPython; the host tiers, the demo monitor and the bench
# import the very same file to build topics, subscribe and read them. docs/protocol.md draws it.
#
#   el/<fleet>/dev/<id>/up/<kind>      device -> host   (hello, hb, esc, ans)
#   el/<fleet>/dev/<id>/down/<kind>    host -> device   (res, rej)
#   el/<fleet>/tier/<name>/in          chained escalations to a tier
#   el/<fleet>/tier/<name>/status      "online" | "offline" (retained; the last will says offline)
#
# Data from devices and commands to devices never share a subtree, and each device has its own:
# a broker ACL (`pattern write el/+/dev/%c/up/#`) keeps a device to its client id. That holds
# only while one id has one spelling, so <id> is exactly 8 lower-case hex digits (the "%08x" of
# the wire header's u32) and device_id() refuses every other spelling: "0x000001", "0000_001",
# " 0000001", "+0000001", "0000000A" would all be device 1 to int(s, 16).
#
# Building allocates the topic string: a board does it once, at start-up (ladder.link.mqtt keeps
# the encoded topics). Parsing is for the host and for tests; a board never parses a topic (it
# compares the prefix of its own down/ subtree).

from . import wire

ROOT = "el"
DEV = "dev"
TIER = "tier"
UP = "up"
DOWN = "down"
IN = "in"
STATUS = "status"
ONLINE = "online"
OFFLINE = "offline"
ANY = "+"  # an MQTT single-level wildcard: for subscriptions only

# The <kind> level of a device topic for each wire message type.
KIND = {
    wire.HELLO: "hello",
    wire.HEARTBEAT: "hb",
    wire.ESCALATE: "esc",
    wire.RESULT: "res",
    wire.REJECT: "rej",
    wire.ANSWER: "ans",
}

_HEX = "0123456789abcdef"


def device_id(text):
    """The device id that a topic level spells: exactly 8 lower-case hex digits, else ValueError."""
    if not isinstance(text, str) or len(text) != 8:
        raise ValueError("topic: device id %r is not 8 lower-case hex digits" % (text,))
    v = 0
    for ch in text:
        d = _HEX.find(ch)
        if d < 0:
            raise ValueError("topic: device id %r is not 8 lower-case hex digits" % (text,))
        v = v << 4 | d
    return v


def device_level(device):
    """The one spelling of a device id in a topic."""
    if not 0 <= device <= 0xFFFFFFFF:
        raise ValueError("topic: device id %r is not a u32" % (device,))
    return "%08x" % device


def device_topic(fleet, device, direction, kind):
    """el/<fleet>/dev/<id>/<direction>/<kind>; kind "" gives the subtree's prefix."""
    return "el/%s/dev/%s/%s/%s" % (fleet, device_level(device), direction, kind)


def device_filter(fleet, direction, kind=ANY):
    """A subscription to every device's <direction>/<kind> (kind "+" by default)."""
    return "el/%s/dev/+/%s/%s" % (fleet, direction, kind)


def tier_topic(fleet, tier, leaf):
    """el/<fleet>/tier/<name>/<leaf> (in or status); tier ANY makes a filter."""
    return "el/%s/tier/%s/%s" % (fleet, tier, leaf)


def fleet_filter(fleet):
    """A subscription to the whole tree of one fleet."""
    return "el/%s/#" % fleet


def parse(topic):
    """(fleet, DEV, device id, UP|DOWN, kind) or (fleet, TIER, tier name, leaf, None).

    ValueError("topic: ...") for anything else: another root, another shape, an empty level, a
    device id in any spelling but its one (device_id)."""
    p = topic.split("/")
    n = len(p)
    if n < 5 or p[0] != ROOT or not p[1]:
        raise ValueError("topic: %r is not under el/<fleet>/" % (topic,))
    if p[2] == DEV and n == 6 and (p[4] == UP or p[4] == DOWN) and p[5]:
        return p[1], DEV, device_id(p[3]), p[4], p[5]
    if p[2] == TIER and n == 5 and p[3] and p[4]:
        return p[1], TIER, p[3], p[4], None
    raise ValueError("topic: %r is neither el/<fleet>/dev/<id>/up|down/<kind> nor a tier's" % topic)
