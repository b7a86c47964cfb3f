"""fit(): a snapshot cut down to a byte budget (the daemon's reply cap), saying what was cut.

A hostile or just huge process (100k fds with 4 KiB paths, thousands of mapped files)
can make a snapshot of tens of MB. What grows is always a list of records (fds, sockets,
threads, mapped files, libraries, environment variables, stored rows), so those are cut,
the longest first, from the end, and the snapshot says how many entries each lost.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson


def _record_lists(node: Any, path: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(dotted path, list) for every list of objects in the tree ("fds.list", "sockets")."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _record_lists(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        yield path, node


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def fit(snapshot: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """The snapshot itself when its JSON takes at most max_bytes. Otherwise a copy whose
    longest lists of records are cut from the end until it fits, with `truncated`
    ({path: entries left out}) and `partial` set. Raises ValueError if it cannot fit even
    with those lists emptied (only a budget far below any real snapshot can do that)."""
    size = _size(snapshot)
    if size <= max_bytes:
        return snapshot
    out = copy.deepcopy(snapshot)
    cut: dict[str, int] = {}
    out["truncated"] = cut
    out["partial"] = True
    while size > max_bytes:
        lists = list(_record_lists({k: v for k, v in out.items() if k != "truncated"}))
        if not lists:
            raise ValueError(f"snapshot of pid {snapshot.get('pid')} does not fit in "
                             f"{max_bytes} bytes even without its lists")
        path, longest = max(lists, key=lambda pl: _size(pl[1]))
        excess, keep, freed = size - max_bytes, len(longest), 0
        while keep > 0 and freed < excess:
            keep -= 1
            freed += _size(longest[keep]) + 1
        cut[path] = cut.get(path, 0) + len(longest) - keep
        del longest[keep:]
        size = _size(out)
    return out
