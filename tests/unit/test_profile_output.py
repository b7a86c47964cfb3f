"""collector.profile without BPF: folding raw samples, folded text, the SVG flame graph."""

from __future__ import annotations

import errno
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from collector.profile import Profile, parse_folded, render_folded, render_svg, sample
from collector.profile.flamegraph import build_tree, color
from collector.profile.model import LOST_STACK, clean, fold, make_profile
from probes.profile import RawSample

SVG = "{http://www.w3.org/2000/svg}"


class FakeNamer:
    """Addresses 0x1000 * k name function f<k>; 0xdead is unknown."""

    def user_frames(self, pid: int) -> Callable[[int, bool], tuple[str, bool]]:
        def frame(addr: int, leaf: bool) -> tuple[str, bool]:
            return (f"f{addr // 0x1000}", True) if addr != 0xDEAD else ("[unknown]", False)
        return frame

    def kernel_frame(self, addr: int) -> tuple[str, bool]:
        return f"k{addr & 0xF}_[k]", True


def test_fold_orders_root_first_kernel_on_top_and_counts_unknown() -> None:
    raw = [RawSample(7, "app", (0x3000, 0x2000, 0x1000), (0xF1, 0xF2), 0, 0, 5),
           RawSample(7, "app", (0x3000, 0x2000, 0x1000), (), 0, -errno.EFAULT, 3),
           RawSample(7, "app", (0xDEAD, 0x1000), (), 0, -errno.EFAULT, 2),
           RawSample(8, "worker", (), (), -errno.EEXIST, -errno.EFAULT, 1)]
    acc, frames, unknown = fold(raw, FakeNamer(), None)
    assert acc == {("app", "f1", "f2", "f3", "k2_[k]", "k1_[k]"): 5,
                   ("app", "f1", "f2", "f3"): 3,
                   ("app", "f1", "[unknown]"): 2,
                   ("worker", LOST_STACK): 1}
    assert frames == 5 * 5 + 3 * 3 + 2 * 2 + 1
    assert unknown == 2 + 1


def test_fold_redacts_each_distinct_name_once() -> None:
    seen: list[str] = []

    def redact(s: str) -> str:
        seen.append(s)
        return s.replace("f2", "[REDACTED]")

    raw = [RawSample(7, "app", (0x2000, 0x1000), (), 0, 0, 1),
           RawSample(7, "app", (0x2000, 0x1000), (0xF1,), 0, 0, 1)]
    acc, _f, _u = fold(raw, FakeNamer(), redact)
    assert ("app", "f1", "[REDACTED]", "k1_[k]") in acc
    assert sorted(seen) == ["app", "f1", "f2", "k1_[k]"]


def test_clean_removes_separators_and_control_characters() -> None:
    assert clean("a;b\nc\x00d\ud800") == "a:b?c?d?"
    assert clean("x" * 2000) == "x" * 512
    assert clean("  ") == "?"


def test_folded_round_trip_and_sort() -> None:
    p = make_profile({("app", "main", "hot"): 60, ("app", "main", "cold"): 40,
                      ("app", "std::vector<int> f(int)"): 2})
    text = render_folded(p)
    assert text.splitlines() == ["app;main;cold 40", "app;main;hot 60",
                                 "app;std::vector<int> f(int) 2"]
    back = parse_folded(text + "junk\n\n")
    assert back.stacks == p.stacks and back.samples == 102
    assert p.top_frames() == {"hot": 60, "cold": 40, "std::vector<int> f(int)": 2}


def _frames(svg: str) -> dict[str, tuple[float, str, str]]:
    """name -> (width, fill, title) of every frame box, from the parsed XML."""
    root = ET.fromstring(svg.encode())
    out = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "frame":
            continue
        title = g.find(f"{SVG}title").text or ""  # type: ignore[union-attr]
        rect = g.find(f"{SVG}rect")
        assert rect is not None
        out[title[:title.rindex(" (")]] = (float(rect.get("width", "0")),
                                           rect.get("fill", ""), title)
    return out


def test_svg_is_valid_xml_with_proportional_frames_and_tooltips() -> None:
    p = make_profile({("app", "main", "hot"): 75, ("app", "main", "cold"): 25})
    svg = render_svg(p, "CPU of app")
    frames = _frames(svg)
    assert set(frames) == {"all", "app", "main", "hot", "cold"}
    assert frames["hot"][0] == pytest.approx(3 * frames["cold"][0], rel=1e-3)
    assert frames["main"][0] == pytest.approx(frames["all"][0])
    assert frames["hot"][2] == "hot (75 samples, 75.00%)"
    assert ">CPU of app</text>" in svg
    for needed in ("function zoom(", "function unzoom(", "function search(", "Reset Zoom",
                   'id="matched"', "Search"):
        assert needed in svg
    # self-contained: nothing to fetch
    assert not re.search(r"(href|src)\s*=|@import|url\(", svg)


def test_svg_escapes_hostile_frame_names() -> None:
    evil = '</title><script>alert(1)</script>&"\'<![CDATA[]]>'
    p = make_profile({("app", clean(evil)): 3, ("app", "ok"): 1})
    svg = render_svg(p, title="<b>title</b>&")
    assert "<script>alert" not in svg and "</title><script>" not in svg
    assert svg.count("<script") == 1  # ours only
    assert svg.count("]]>") == 1      # our CDATA end only
    frames = _frames(svg)  # parses: the names came through intact as text
    assert clean(evil) in frames
    assert "&lt;b&gt;title&lt;/b&gt;&amp;" in svg


def test_colours_are_deterministic_and_by_kind() -> None:
    assert color("hot_function") == color("hot_function")
    assert color("hot_function") != color("cold_function")
    r, g, _b = map(int, re.findall(r"\d+", color("do_syscall_64_[k]")))
    assert r >= 205 and 110 <= g <= 170  # kernel: orange
    r, g, _b = map(int, re.findall(r"\d+", color("[libc.so.6+0x1234]")))
    assert r == g  # unknown: grey


def test_narrow_frames_are_not_drawn_but_counted_in_parents() -> None:
    acc = {("app", "main", "hot"): 1_000_000, ("app", "main", "tiny"): 1}
    p = make_profile(acc)
    frames = _frames(render_svg(p))
    assert "tiny" not in frames and "hot" in frames
    assert build_tree(p).children["app"].value == 1_000_001


def test_empty_profile_renders() -> None:
    svg = render_svg(Profile(stacks=()))
    assert set(_frames(svg)) == {"all"}


@pytest.mark.parametrize("kw", [dict(pids=[], duration_s=1), dict(pids=[1], duration_s=0),
                                dict(pids=[1], duration_s=1, freq=0),
                                dict(pids=[1], duration_s=1, freq=5000),
                                dict(pids=[-3], duration_s=1)])
def test_sample_rejects_bad_arguments(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sample(redact=None, **kw)  # type: ignore[arg-type]
