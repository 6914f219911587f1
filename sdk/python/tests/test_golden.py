"""The golden frames of protocol/vectors decode to the expected messages and
re-encode byte-exact; the MessagePack and JSON forms agree."""

import json
from pathlib import Path

import pytest

from tether import _proto as proto

VECTORS = Path(__file__).resolve().parents[3] / "protocol" / "vectors"
FRAMES = sorted(p.stem for p in VECTORS.glob("*.msgpack"))


def test_every_message_type_has_a_golden_frame():
    have = {(s.split("_", 1)[0], s.split("_", 1)[1]) for s in FRAMES}
    want = {("client", t) for t in proto.CLIENT_MESSAGES} | {("server", t) for t in proto.SERVER_MESSAGES}
    assert have == want


@pytest.mark.parametrize("stem", FRAMES)
def test_a_golden_frame_decodes_and_reencodes_byte_exact(stem):
    side, kind = stem.split("_", 1)
    raw = (VECTORS / f"{stem}.msgpack").read_bytes()
    text = (VECTORS / f"{stem}.json").read_text()
    msg = proto.decode(raw, server=side == "server")
    assert msg is not None and kind == msg.TYPE
    assert proto.encode(msg) == raw
    from_json = proto.decode(text, server=side == "server", json_encoding=True)
    assert from_json == msg
    # The JSON encoding is the file's, up to whitespace.
    assert json.loads(proto.encode(msg, json_encoding=True)) == json.loads(text)


def test_unknown_server_messages_are_ignored_and_unknown_fields_too():
    import msgpack

    assert proto.decode(msgpack.packb({"type": "from_the_future", "x": 1})) is None
    ok = proto.decode(msgpack.packb({"type": "ok", "id": 7, "new_field": [1, 2]}))
    assert ok == proto.Ok(id=7)


def test_a_frame_without_a_type_is_an_error():
    import msgpack

    with pytest.raises(ValueError, match="type"):
        proto.decode(msgpack.packb({"id": 1}))
