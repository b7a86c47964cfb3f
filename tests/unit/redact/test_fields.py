"""Named values (env vars, audit arguments): masked by name, else redacted like payload."""

from __future__ import annotations

from typing import Any

import pytest

from redact import Redactor

R = Redactor.default()


@pytest.mark.parametrize("name", ["DB_PASSWORD", "clientSecret", "X-Api-Key", "API_TOKEN",
                                  "password", "aws_secret_access_key", "PGPASSWORD"])
def test_secret_names_mask_the_whole_value(name: str) -> None:
    assert R.redact_field(name, "hunter2 with spaces") == "[REDACTED:secret]"


@pytest.mark.parametrize("name", ["PATH", "password_hash", "token_type", "HOME", "LANG",
                                  "max_tokens", "spin"])
def test_ordinary_names_keep_ordinary_values(name: str) -> None:
    assert R.redact_field(name, "/usr/bin:/bin") == "/usr/bin:/bin"


def test_ordinary_names_still_get_payload_redaction() -> None:
    out = R.redact_field("DATABASE_URL", "postgres://app:s3cr3tpw@db:5432/x")
    assert "s3cr3tpw" not in out
    assert out.startswith("postgres://app:[REDACTED:")
    card = R.redact_field("NOTE", "card 4111 1111 1111 1111 ok")
    assert "4111" not in card


def test_counted_per_secret_name() -> None:
    r = Redactor.default()
    r.redact_field("DB_PASSWORD", "x1")
    r.redact_field("DB_PASSWORD", "")  # nothing to mask
    assert r.counters()["secret_name"] == 1


def test_fields_follow_the_key_names_at_any_depth() -> None:
    args: dict[str, Any] = {"reason": "INC-1 Bearer abc.def.ghi", "token": "zzz",
                            "nested": {"password": ["a", "b"], "n": 3, "ok": True},
                            "blob": b"\x00\x01", "none": None}
    out = R.redact_fields(args)
    assert out["token"] == "[REDACTED:secret]"
    assert out["nested"]["password"] == ["[REDACTED:secret]", "[REDACTED:secret]"]
    assert out["nested"]["n"] == 3 and out["nested"]["ok"] is True and out["none"] is None
    assert out["blob"] == "[2 bytes]"
    assert "abc.def.ghi" not in out["reason"]


def test_depth_and_length_are_bounded() -> None:
    deep: Any = "x"
    for _ in range(20):
        deep = [deep]
    assert "[REDACTED:oversize]" in str(R.redact_fields(deep))
    assert len(R.redact_field("NOTE", "a" * 10000)) == 4096


def test_text_round_trips_non_utf8() -> None:
    assert R.redact_text("caf\udce9 ok") == "caf\udce9 ok"
