"""The profile reply: every counter and stack round-trips; over the cap, the least sampled
stacks become one [truncated] stack, so widths and percentages stay true."""

from __future__ import annotations

import orjson
import pytest

from collector.profile import (
    Profile,
    parse_folded,
    profile_from_wire,
    profile_to_wire,
    render_folded,
)
from collector.profile.model import make_profile
from collector.profile.wire import TRUNCATED


def profile(n: int = 200) -> Profile:
    acc: dict[tuple[str, ...], int] = {("app", "main", f"fn{i:04d}" + "x" * 300): i + 1
                                       for i in range(n)}
    acc[("app", "main", "hot")] = 5000
    return make_profile(acc, pids=(7, 8), freq=99, duration_s=10.01, lost=3, frames=9,
                        unknown_frames=2, kernel_hidden=True, stats={"samples": 1, "files": 4})


def test_round_trip_keeps_everything() -> None:
    p = profile()
    wire = profile_to_wire(p, 8 << 20)
    assert wire["truncated"] is None
    back = profile_from_wire(orjson.loads(orjson.dumps(wire)))
    assert back == p


def test_over_the_cap_keeps_the_most_sampled_and_counts_the_rest() -> None:
    p = profile()
    wire = profile_to_wire(p, 20_000)
    assert len(orjson.dumps(wire)) <= 20_000
    back = profile_from_wire(wire)
    kept = dict(back.stacks)
    assert kept[("app", "main", "hot")] == 5000
    cut = wire["truncated"]
    assert cut["stacks"] > 100 and kept[(TRUNCATED,)] == cut["samples"]
    assert back.samples == p.samples == sum(kept.values())
    dropped = [n for s, n in p.stacks if s not in kept]
    assert len(dropped) == cut["stacks"] and max(dropped) <= min(
        n for s, n in back.stacks if s != (TRUNCATED,))
    assert parse_folded(render_folded(back)).samples == back.samples


@pytest.mark.parametrize("bad", [{}, {"stacks": "x"}, {"stacks": [[["a"], "many"]]}])
def test_what_is_not_a_profile_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a profile"):
        profile_from_wire(bad)
