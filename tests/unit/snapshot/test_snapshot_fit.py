"""fit(): a snapshot over the reply cap loses entries of its longest lists, from the end,
and says how many; one under the cap is returned as is."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from collector.snapshot import fit, render_summary


def big(fds: int = 20_000, env: int = 300) -> dict[str, Any]:
    """A process with many long fd paths (what a hostile one can do) and some env vars."""
    return {"schema": 1, "pid": 7, "taken_at": 1.0, "partial": False, "exited": False,
            "failed": {}, "identity": {"comm": "hostile", "groups": [4, 27]},
            "fds": {"count": fds, "list": [{"fd": i, "type": "file", "path": "/x" * 200}
                                           for i in range(fds)]},
            "sockets": [{"fd": 3, "laddr": ["127.0.0.1", 80], "raddr": None}],
            "environ": {"count": env, "vars": [{"name": f"V{i}", "value": "v" * 50}
                                               for i in range(env)]}}


def size(d: Any) -> int:
    return len(orjson.dumps(d))


def test_under_the_cap_is_returned_untouched() -> None:
    snap = big(fds=10)
    assert fit(snap, size(snap)) is snap


def test_over_the_cap_cuts_the_longest_lists_from_the_end() -> None:
    snap = big()
    before = copy.deepcopy(snap)
    cap = 1 << 20
    assert size(snap) > 8 * cap
    out = fit(snap, cap)
    assert snap == before  # the caller's snapshot is not changed
    assert cap - 1000 < size(out) <= cap
    assert out["partial"] is True and set(out["truncated"]) == {"fds.list"}
    kept = out["fds"]["list"]
    assert [e["fd"] for e in kept] == list(range(len(kept)))  # the lowest fds stay
    assert len(kept) + out["truncated"]["fds.list"] == 20_000 == out["fds"]["count"]
    assert out["environ"] == snap["environ"] and out["sockets"] == snap["sockets"]
    assert "TRUNCATED to fit the daemon's reply cap, entries left out: fds.list 1" in \
        render_summary(out)


def test_a_tight_cap_cuts_several_lists_and_never_plain_values() -> None:
    snap = big(fds=3000, env=3000)
    out = fit(snap, 40_000)
    assert size(out) <= 40_000
    assert set(out["truncated"]) == {"fds.list", "environ.vars"}
    assert out["identity"] == snap["identity"]  # [4, 27] is a list of values: never cut
    assert out["sockets"] == snap["sockets"]


def test_a_cap_below_the_bare_snapshot_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not fit in 100 bytes"):
        fit(big(fds=100), 100)
