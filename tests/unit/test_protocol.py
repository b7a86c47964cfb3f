"""Wire protocol framing and fault codes."""

from __future__ import annotations

import orjson
import pytest

from collector import protocol
from collector.protocol import Fault, ProtocolError


def test_roundtrip() -> None:
    op, args = protocol.decode_request(protocol.request("status", {"x": 1}))
    assert (op, args) == ("status", {"x": 1})


@pytest.mark.parametrize(("line", "fault"), [
    (b"not json\n", Fault.BAD_FRAME),
    (b"\xff\xfe{}\n", Fault.BAD_FRAME),
    (b"[1,2]\n", Fault.BAD_REQUEST),
    (b'{"args":{}}\n', Fault.BAD_REQUEST),
    (b'{"op":"rm -rf"}\n', Fault.UNKNOWN_OP),
    (b'{"op":"status","args":[]}\n', Fault.BAD_REQUEST),
    (b'{"op":"status","uid":0}\n', Fault.BAD_REQUEST),  # identity can't be claimed
    (b'{"op":"status","args":' + b'{"a":' * 20 + b"1" + b"}" * 20 + b"}\n", Fault.BAD_FRAME),
    (b'{"op":"status","args":{"a":"' + b"x" * 70000 + b'"}}\n', Fault.BAD_FRAME),
])
def test_bad_requests(line: bytes, fault: Fault) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.decode_request(line)
    assert err.value.fault == fault


def test_error_wire_shape_has_no_traceback() -> None:
    msg = orjson.loads(protocol.error(ProtocolError(Fault.DENIED, "no role")))
    assert msg == {"ok": False, "error": {"code": 4, "name": "DENIED", "message": "no role"}}


def test_fault_codes_are_stable() -> None:
    assert [f.value for f in Fault] == list(range(1, 11))
