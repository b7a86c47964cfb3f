"""An interactive SVG flame graph of a Profile, rendered by periscope itself.

Like flamegraph.pl's output: one box per frame, as wide as its samples, callers below
callees; click to zoom, "Reset Zoom", search (highlights matches and prints the matched
share), tooltips with samples and percent. Everything is inline (the script is
flamegraph.js next to this file); nothing is fetched. Frame names come from traced
binaries: they reach the SVG only XML-escaped (text and attributes), never inside the
script, which reads them back with textContent. Colours are a hash of the name, so the
same function has the same colour in every graph.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from collector.profile.model import Profile

SCRIPT = (Path(__file__).resolve().parent / "flamegraph.js").read_text()
WIDTH = 1200
FRAME_H = 16
FONT_SIZE = 12
CHAR_W = FONT_SIZE * 0.59   # Verdana's average advance
PAD = 10
TOP = FONT_SIZE * 3          # title and Reset Zoom / Search
BOTTOM = FONT_SIZE * 2 + 10  # the details line
MIN_WIDTH = 0.1              # px: narrower frames (and their children) are not drawn
_XML_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(s: str) -> str:
    """s escaped for XML text and attribute values, XML-invalid characters replaced."""
    return escape(_XML_BAD.sub("?", s), {'"': "&quot;", "'": "&#39;"})


@dataclass
class Node:
    name: str
    value: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def build_tree(profile: Profile) -> Node:
    root = Node("all")
    for stack, n in profile.stacks:
        root.value += n
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, Node(frame))
            node.value += n
    return root


def color(name: str) -> str:
    """flamegraph.pl's palettes, keyed by a hash of the name (deterministic)."""
    h = zlib.crc32(name.encode("utf-8", "surrogateescape"))
    v1, v2, v3 = (h & 0xFF) / 255, ((h >> 8) & 0xFF) / 255, ((h >> 16) & 0xFF) / 255
    if name.endswith("_[k]"):          # kernel: orange
        return f"rgb({205 + int(50 * v3)},{110 + int(60 * v1)},{int(30 * v2)})"
    if name.startswith("["):           # [unknown], [lib+0x..], [lost stack]: grey
        g = 160 + int(50 * v1)
        return f"rgb({g},{g},{g + 10})"
    return f"rgb({205 + int(50 * v3)},{int(230 * v1)},{int(55 * v2)})"  # hot


def _fit(name: str, width: float) -> str:
    chars = int((width - 6) / CHAR_W)
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[:chars - 2] + ".."


def render_svg(profile: Profile, title: str = "Flame Graph") -> str:
    """The flame graph as a standalone SVG document (UTF-8 text)."""
    tree = build_tree(profile)
    total = max(tree.value, 1)
    scale = (WIDTH - 2 * PAD) / total
    frames: list[tuple[int, float, int, Node]] = []  # depth, x, samples before, node

    def walk(node: Node, depth: int, x: int) -> None:
        frames.append((depth, PAD + x * scale, x, node))
        for name in sorted(node.children):
            child = node.children[name]
            if child.value * scale >= MIN_WIDTH:
                walk(child, depth + 1, x)
            x += child.value
    walk(tree, 0, 0)
    depth = max((d for d, *_ in frames), default=0) + 1
    height = int(TOP + depth * FRAME_H + BOTTOM)
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        f'<svg version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
        ' xmlns="http://www.w3.org/2000/svg" onload="init(evt)"'
        f' data-total="{total}">\n',
        '<style type="text/css">text { font-family: Verdana, sans-serif; font-size: '
        f'{FONT_SIZE}px; fill: rgb(0,0,0); }} #title {{ font-size: {FONT_SIZE + 5}px; }}\n'
        '.frame:hover rect { stroke: rgb(0,0,0); stroke-width: 0.5; cursor: pointer; }\n'
        '#reset, #search { cursor: pointer; } .hide { display: none; }</style>\n',
        f'<script type="text/ecmascript"><![CDATA[\n{SCRIPT}]]></script>\n',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="rgb(248,248,248)"/>\n',
        f'<text id="title" x="{WIDTH // 2}" y="{FONT_SIZE * 2}" text-anchor="middle">'
        f'{xml_text(title)}</text>\n',
        f'<text id="reset" class="hide" x="{PAD}" y="{FONT_SIZE * 2}">Reset Zoom</text>\n',
        f'<text id="search" x="{WIDTH - PAD - 100}" y="{FONT_SIZE * 2}">Search</text>\n',
        f'<text id="matched" x="{WIDTH - PAD - 100}" y="{height - 15}"> </text>\n',
        f'<text id="details" x="{PAD}" y="{height - 15}"> </text>\n',
        '<g id="frames">\n',
    ]
    for i, (d, x, _before, node) in enumerate(frames):
        w = node.value * scale
        y = height - BOTTOM - (d + 1) * FRAME_H
        pct = 100.0 * node.value / total
        label = f"{node.name} ({node.value:,} sample{'s' if node.value != 1 else ''}, "\
                f"{pct:.2f}%)"
        out.append(
            f'<g class="frame" id="f{i}" data-v="{node.value}"><title>{xml_text(label)}</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{FRAME_H - 1}" rx="2"'
            f' fill="{color(node.name) if d else "rgb(240,200,200)"}"/>'
            f'<text x="{x + 3:.2f}" y="{y + FRAME_H - 4}">{xml_text(_fit(node.name, w))}'
            '</text></g>\n')
    out.append("</g>\n</svg>\n")
    return "".join(out)
