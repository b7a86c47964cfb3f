"""Quality over tests/data/redact/corpus.jsonl: every secret gone (one-shot and all 2-way
splits), at most 2% of look-alike negatives altered, and redaction is idempotent."""

from __future__ import annotations

from redact import Redactor
from redact.quality import DEFAULT_CORPUS, evaluate, load


def test_corpus_quality() -> None:
    rows = load(DEFAULT_CORPUS)
    assert len(rows) > 300
    rep = evaluate(Redactor.default(), rows, split_step=3)
    assert rep.leaked_oneshot == 0, rep.failures
    assert rep.leaked_split == 0, rep.failures
    assert rep.fp_rate <= 0.02, rep.failures
    assert rep.not_idempotent == 0, rep.failures


def test_corpus_pseudonymized() -> None:
    """Keyed tokens hide the same secrets and are as idempotent as plain placeholders."""
    rep = evaluate(Redactor.default(pseudonymize_key=b"k"), load(DEFAULT_CORPUS), split_step=11)
    assert rep.leaked_oneshot == 0 and rep.leaked_split == 0, rep.failures
    assert rep.altered == 0 and rep.not_idempotent == 0, rep.failures
