"""Golden-file format for decode tests: hex bytes and the expected decoded JSON in one file."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import orjson


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, tuple):
        return [to_jsonable(x) for x in obj]
    return obj


def dump(raw: bytes, rec: Any) -> str:
    hexed = raw.hex()
    lines = [hexed[i:i + 64] for i in range(0, len(hexed), 64)]
    body = orjson.dumps(to_jsonable(rec), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    return "hex:\n" + "\n".join(lines) + "\nexpect:\n" + body.decode() + "\n"


def load(text: str) -> tuple[bytes, Any]:
    head, _, expect = text.partition("expect:\n")
    hexed = "".join(head.removeprefix("hex:\n").split())
    return bytes.fromhex(hexed), orjson.loads(expect)
