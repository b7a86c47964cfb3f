"""Wire protocol: framing, the Op table, fault codes and the one error -> fault mapping."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import errors, protocol
from collector.protocol import FAULTS, Fault, Op, OpKind

JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
                       | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
                       lambda kids: st.lists(kids, max_size=3)
                       | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=8)


@given(st.lists(st.dictionaries(st.text(max_size=8), JSONISH, max_size=4), max_size=20))
def test_a_batch_frame_in_one_serialization_equals_the_frame_of_its_array(
        events: list[dict[str, object]]) -> None:
    frame, array = protocol.events_frame_of(events)
    assert frame == protocol.events_frame(orjson.dumps(events), len(events))
    assert array == orjson.dumps(events) and array.obj is frame


def test_roundtrip() -> None:
    op, args = protocol.decode_request(protocol.request("status", {"x": 1}))
    assert (op, args) == (Op.STATUS, {"x": 1})
    assert op is Op.STATUS


@pytest.mark.parametrize(("line", "fault"), [
    (b"not json\n", Fault.BAD_FRAME),
    (b"\xff\xfe{}\n", Fault.BAD_FRAME),
    (b"[1,2]\n", Fault.BAD_REQUEST),
    (b'{"args":{}}\n', Fault.BAD_REQUEST),
    (b'{"op":"rm -rf"}\n', Fault.UNKNOWN_OP),
    (b'{"op":"Trace"}\n', Fault.UNKNOWN_OP),  # wire names are exact
    (b'{"op":"status","args":[]}\n', Fault.BAD_REQUEST),
    (b'{"op":"status","uid":0}\n', Fault.BAD_REQUEST),  # identity can't be claimed
    (b'{"op":"status","args":' + b'{"a":' * 20 + b"1" + b"}" * 20 + b"}\n", Fault.BAD_FRAME),
    (b'{"op":"status","args":{"a":"' + b"x" * 70000 + b'"}}\n', Fault.BAD_FRAME),
])
def test_bad_requests(line: bytes, fault: Fault) -> None:
    with pytest.raises(errors.RequestError) as err:
        protocol.decode_request(line)
    assert protocol.fault_of(err.value) == fault


def test_error_wire_shape_has_no_traceback() -> None:
    msg = orjson.loads(protocol.error(errors.Denied("no role")))
    assert msg == {"ok": False, "error": {"code": 4, "name": "DENIED", "message": "no role"}}


def test_unmapped_errors_are_internal_and_keep_their_text_to_themselves() -> None:
    for err in (KeyError("/var/lib/periscope/secret-path"),
                errors.GrantsError("grants /var/lib/x: cannot write"),
                errors.ConfigError("bad key")):
        wire = orjson.loads(protocol.error(err))["error"]
        assert wire == {"code": 10, "name": "INTERNAL", "message": protocol.INTERNAL_MESSAGE}
    assert orjson.loads(protocol.internal_error())["error"]["name"] == "INTERNAL"


def test_fault_codes_are_stable() -> None:
    assert [f.value for f in Fault] == list(range(1, 11))


def _subclasses(cls: type) -> set[type]:
    out = set(cls.__subclasses__())
    for sub in list(out):
        out |= _subclasses(sub)
    return out


def test_every_request_error_has_its_own_fault() -> None:
    """Each request-level error maps to a fault, and a distinct one: a client can tell
    them apart by code alone."""
    request_errors = _subclasses(errors.RequestError)
    assert request_errors <= set(FAULTS)
    faults = [FAULTS[cls] for cls in request_errors]
    assert len(set(faults)) == len(faults)
    assert Fault.INTERNAL not in FAULTS.values()  # INTERNAL is "not in the table"
    # subclasses inherit their nearest listed base
    assert protocol.fault_of(errors.AuditCorruptError("x")) is Fault.INTERNAL
    assert protocol.fault_of(errors.SelectorError("x")) is Fault.BAD_REQUEST
    assert protocol.fault_of(errors.CaptureError("x")) is Fault.UNAVAILABLE


def test_every_periscope_error_is_under_one_root() -> None:
    """errors.py holds the one hierarchy: every exception class the daemon's core defines
    (the rooms of this layout) is there, and every other collector/ error derives from it
    (a private control-flow class, named with a leading underscore, excepted)."""
    import pkgutil
    from importlib import import_module

    import collector

    core = ("access", "capture", "store", "serve", "proc", "daemon", "protocol", "selectors",
            "config", "errors")
    seen = []
    for info in pkgutil.walk_packages(collector.__path__, "collector."):
        if info.name.split(".")[1] not in core or info.name == "collector.daemon.__main__":
            continue
        mod = import_module(info.name)
        for value in vars(mod).values():
            if isinstance(value, type) and issubclass(value, BaseException) \
                    and value.__module__ == info.name:
                seen.append(value)
    assert seen and all(issubclass(cls, errors.PeriscopeError) for cls in seen), seen
    assert {cls.__module__ for cls in seen} == {"collector.errors"}
    rest = []
    for info in pkgutil.walk_packages(collector.__path__, "collector."):
        if info.name.endswith("__main__") or info.name.split(".")[1] in core:
            continue
        mod = import_module(info.name)
        rest += [v for v in vars(mod).values() if isinstance(v, type)
                 and issubclass(v, BaseException) and v.__module__ == info.name
                 and not v.__name__.startswith("_")]
    assert rest and all(issubclass(cls, errors.PeriscopeError) for cls in rest), rest


def test_op_table() -> None:
    assert tuple(op.value for op in Op) == protocol.OPS
    assert len(set(protocol.OPS)) == len(protocol.OPS)
    assert [op for op in Op if op.streaming] == [Op.TRACE, Op.PROFILE, Op.REQUEST_WAIT]
    assert {op for op in Op if op.kind is OpKind.IDENTITY} == {Op.HELLO, Op.AUTH}
    assert {op for op in Op if op.kind is OpKind.STORED} == {
        Op.EVENTS, Op.ERRORS, Op.CONNS, Op.HTTP, Op.SQL, Op.REDIS, Op.DNS, Op.TOP}
    assert {op for op in Op if op.kind is OpKind.LIVE} == {Op.TRACE, Op.SNAPSHOT, Op.PROFILE}
    assert all(op.targeted == (op.kind in (OpKind.LIVE, OpKind.STORED)) for op in Op)
    assert orjson.loads(protocol.request(Op.GRANT_ADD)) == {"op": "grant.add", "args": {}}


def test_loss_names_are_one_table() -> None:
    names = [name for name, _where, _text in protocol.LOSSES]
    assert len(set(names)) == len(names)
    assert {where for _n, where, _t in protocol.LOSSES} == {"kernel", "pipeline", "router",
                                                             "tracer"}
    assert dict(protocol.LOSS_TEXT) == {n: t for n, _w, t in protocol.LOSSES}
