"""The store's pipeline sink: conn and l7 records to their tables (l7store.py), every other
event to the blocks (store.py)."""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

import orjson

from collector.capture.events import Batch
from collector.store.l7store import KINDS, L7Store

_KIND = itemgetter("kind")


class SplitSink:
    """The store's pipeline sink: conn and l7 records to their tables, every other event
    to the event store (its blocks). A batch with no conn or l7 record goes through whole,
    its one serialization shared with the other sinks; one with some is split, the events
    serialized for their block (Batch.json) and each conn or l7 record for its row."""

    def __init__(self, events: Callable[[Batch], None], l7: L7Store) -> None:
        self.events = events
        self.l7 = l7

    def __call__(self, batch: Batch, /) -> None:
        events, procs = batch.events, batch.procs
        if KINDS.isdisjoint(map(_KIND, events)):  # the common case, checked at C level
            self.events(batch)
            return
        mine = [i for i, ev in enumerate(events) if ev["kind"] in KINDS]
        if len(mine) < len(events):
            keep = set(mine)
            rest = [i for i in range(len(events)) if i not in keep]
            self.events(Batch([events[i] for i in rest], [procs[i] for i in rest]))
        dumps = orjson.dumps
        self.l7.add_many([events[i] for i in mine], [dumps(events[i]) for i in mine],
                         [procs[i] for i in mine])
