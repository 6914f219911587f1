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


HTTP = VECTORS.parent / "http"


def test_the_http_golden_bodies_read_as_the_sdk_reads_them():
    """protocol/http: the one-shot response reads as an ExecResult (both
    encodings), the error body as the exception of its code."""
    import msgpack

    from tether._client import _exec_response
    from tether._errors import SpawnError, from_code

    as_json = _exec_response(json.loads((HTTP / "exec_response.json").read_text()))
    packed = msgpack.unpackb((HTTP / "exec_response.msgpack").read_bytes(), raw=False)
    assert isinstance(packed["stderr"], bytes)
    as_msgpack = _exec_response(packed)
    assert as_json == as_msgpack
    assert (as_json.command_id, as_json.exit_code, as_json.reason) == ("c-5f0c9a7e21b34d08", 1, "exited")
    assert (as_json.stdout, as_json.stderr) == (b"ok\n", b"\xff\xfe warning")
    assert as_json.truncated and as_json.duration == 1.234
    err = json.loads((HTTP / "error.json").read_text())
    assert err == msgpack.unpackb((HTTP / "error.msgpack").read_bytes(), raw=False)
    e = from_code(err["code"], err["message"], err.get("errno"))
    assert isinstance(e, SpawnError) and e.errno == 2 and e.reason == "No such file or directory"
