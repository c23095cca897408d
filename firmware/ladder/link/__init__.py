# ladder.link: how a board reaches the host tiers. One module per transport and one entry in
# LINKS; a transport is imported only when device.json names it (each costs RAM on a board).
#
# Every transport has a class Link with the same interface, which ladder.cascade and
# ladder.app use without knowing the transport:
#   Link(device_cfg, device_id)    device_cfg: the parsed /device.json
#   up                             True while the transport itself works (serial: always)
#   tier_online()                  False while the next tier is known to be away: don't escalate
#   service()                      housekeeping (reconnect, keepalive, drain input); never blocks
#   send(mtype, msg, n) -> bool    one wire message (the first n bytes of msg); False if not sent
#   poll(timeout_ms, on_message)   wait at most timeout_ms for input; on_message(buf, n) per whole
#                                  wire message (buf is reused: read it during the call)
#   close()
#   dropped                        what the transport dropped: {reason: count}
#   sessions                       +1 whenever a new session starts (the app then sends HELLO)

LINKS = {"serial": "ladder.link.serial", "mqtt": "ladder.link.mqtt"}


def make(device_cfg, device_id):
    """The Link that device.json's "link": {"kind": ...} names."""
    link = device_cfg.get("link") or {}
    kind = link.get("kind")
    name = LINKS.get(kind)
    if name is None:
        raise ValueError("link: device.json link kind %r is not one of %s" % (kind, sorted(LINKS)))
    return __import__(name, None, None, ("Link",), 0).Link(device_cfg, device_id)
