"""Types of the C per-event tally of BlockBuilder (collector/store/_tally.c)."""

from typing import Any

def tally(events: list[dict[str, Any]], idxs: list[int], kind_bits: dict[str, int],
          other_kind: int, /) -> tuple[dict[int, tuple[int, float, float, int, int]],
                                       dict[tuple[int, str], tuple[int, float, int]],
                                       dict[tuple[int, str, int], int], list[int]] | None: ...
