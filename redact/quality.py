"""Recall and false-positive rate of a Redactor over a JSONL corpus (`python -m redact.quality`).

A positive payload lists the secrets it carries: each must be absent from the one-shot output
and from the output of every 2-way stream split. A negative (no secrets) must come out
unchanged; the false-positive rate is the share of negatives that were altered.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from redact.engine import Redactor

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "tests/data/redact/corpus.jsonl"


@dataclass
class Report:
    secrets: int = 0
    leaked_oneshot: int = 0
    leaked_split: int = 0
    splits: int = 0
    negatives: int = 0
    altered: int = 0
    not_idempotent: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return 1.0 - self.leaked_oneshot / self.secrets if self.secrets else 1.0

    @property
    def fp_rate(self) -> float:
        return self.altered / self.negatives if self.negatives else 0.0

    def lines(self) -> list[str]:
        return [
            f"secrets: {self.secrets}  leaked one-shot: {self.leaked_oneshot}  "
            f"recall: {self.recall:.4f}",
            f"2-way splits checked: {self.splits}  secrets leaked in any split: "
            f"{self.leaked_split}",
            f"negatives: {self.negatives}  altered: {self.altered}  "
            f"false-positive rate: {self.fp_rate:.4f}",
            f"not idempotent: {self.not_idempotent}",
        ]


def load(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate(r: Redactor, rows: list[dict[str, object]], split_step: int = 1) -> Report:
    rep = Report()
    for row in rows:
        data = str(row["payload"]).encode("latin-1")
        proto = row.get("protocol")
        proto = proto if isinstance(proto, str) else None
        secrets = [str(s).encode("latin-1") for s in row.get("secrets") or []]  # type: ignore[attr-defined]
        out = r.redact(data, proto)
        if r.redact(out, proto) != out:
            rep.not_idempotent += 1
            rep.failures.append(f"{row['id']}: not idempotent")
        if not secrets:
            rep.negatives += 1
            if out != data:
                rep.altered += 1
                rep.failures.append(f"{row['id']}: negative altered")
            continue
        rep.secrets += len(secrets)
        leaked = {s for s in secrets if s in out}
        rep.leaked_oneshot += len(leaked)
        rep.failures += [f"{row['id']}: leaked one-shot" for _ in leaked]
        split_leaks: set[bytes] = set()
        for cut in range(0, len(data) + 1, split_step):
            s = r.stream(proto)
            got = s.feed(data[:cut]) + s.feed(data[cut:]) + s.close()
            rep.splits += 1
            split_leaks |= {x for x in secrets if x in got}
        rep.leaked_split += len(split_leaks)
        rep.failures += [f"{row['id']}: leaked in a split" for _ in split_leaks]
    return rep


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_CORPUS
    rep = evaluate(Redactor.default(), load(path))
    print(f"corpus: {path}")
    for line in rep.lines():
        print(line)
    for f in rep.failures[:50]:
        print("  FAIL", f)
    return 0 if not rep.failures else 1


if __name__ == "__main__":
    sys.exit(main())
