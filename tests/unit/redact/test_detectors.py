"""Table tests for the checksum and structure validators in redact.detectors."""

from __future__ import annotations

import base64
import binascii
import json

import pytest

from redact import detectors as d


def _b62(n: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = alphabet[r] + out
    return out.rjust(6, "0")


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("4111111111111111", True),  # Visa test card
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("5555555555554444", True),  # Mastercard 5-series
        ("2223003122003222", True),  # Mastercard 2-series
        ("378282246310005", True),  # Amex
        ("6011111111111117", True),  # Discover
        ("3530111333300000", True),  # JCB
        ("30569309025904", True),  # Diners
        ("6200000000000005", True),  # UnionPay
        ("4111111111111112", False),  # Luhn fails
        ("1234567812345670", False),  # Luhn ok, no brand starts with 1
        ("0000000000000000", False),
        ("4111-1111 1111-1111", False),  # mixed separators
    ],
)
def test_credit_card(number: str, ok: bool) -> None:
    assert bool(d.credit_card(number.encode())) is ok


def test_credit_card_glued_to_a_number() -> None:
    value = b"12 4111 1111 1111 1111"
    spans = d.credit_card(value)
    assert [value[a:b] for a, b in spans] == [b"4111 1111 1111 1111"]


@pytest.mark.parametrize(
    ("ssn", "ok"),
    [
        ("123-45-6788", True),
        ("001-01-0001", True),
        ("899-99-9999", True),
        ("000-12-3456", False),  # area 000
        ("666-12-3456", False),  # area 666
        ("900-12-3456", False),  # 9xx: ITIN range, not SSN
        ("123-00-4567", False),  # group 00
        ("123-45-0000", False),  # serial 0000
        ("123-45-6789", True),  # the classic fake: structurally valid, so redacted
    ],
)
def test_ssn(ssn: str, ok: bool) -> None:
    assert bool(d.ssn(ssn.encode())) is ok


@pytest.mark.parametrize(
    ("iban", "ok"),
    [
        ("DE89370400440532013000", True),
        ("DE89 3704 0044 0532 0130 00", True),
        ("GB82WEST12345698765432", True),
        ("FR1420041010050500013M02606", True),
        ("NL91ABNA0417164300", True),
        ("DE89370400440532013001", False),  # mod-97 fails
        ("DE8937040044053201300", False),  # wrong length for DE
        ("XX00123412341234", False),
    ],
)
def test_iban(iban: str, ok: bool) -> None:
    assert bool(d.iban(iban.encode())) is ok


def test_github_checksum() -> None:
    body = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5"
    good = f"ghp_{body}{_b62(binascii.crc32(body.encode()))}"
    assert d.github_checksum_ok(good.encode())
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    assert not d.github_checksum_ok(bad.encode())
    assert d.github_token(good.encode())
    assert not d.github_token(b"ghp_" + b"x" * 36)  # no checksum and no entropy


def _jwt(header: dict[str, str]) -> bytes:
    def enc(obj: dict[str, str]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=")

    return enc(header) + b"." + enc({"sub": "42"}) + b".c2lnbmF0dXJl"


def test_jwt_structure() -> None:
    assert d.jwt(_jwt({"alg": "HS256", "typ": "JWT"}))
    assert not d.jwt(_jwt({"typ": "JWT"}))  # no alg: not a JWT header
    assert not d.jwt(b"eyJhbGciOi.eyJzdWIi")
    assert not d.jwt(b"eyJ!!!.eyJ!!!.x")


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        (b"hunter2", True),
        (b"$1", False),
        (b"?", False),
        (b":password", False),
        (b"%s", False),
        (b"%(pw)s", False),
        (b"${DB_PASSWORD}", False),
        (b"{{ .Values.password }}", False),
        (b"null", False),
        (b"********", False),
        (b"[REDACTED:secret]", False),
        (b"Bearer", False),
    ],
)
def test_secret_value(value: bytes, secret: bool) -> None:
    assert bool(d.secret_value(value)) is secret


def test_entropy_and_aws_secret() -> None:
    assert d.entropy(b"aaaa") == 0.0
    assert d.entropy(b"ab") == 1.0
    assert d.aws_secret(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert not d.aws_secret(b"da39a3ee5e6b4b0d3255bfef95601890afd80709")  # a SHA-1


def test_acl_tokens() -> None:
    value = b" on >s3cret <old #abcd ~* +@all"
    assert [value[a:b] for a, b in d.acl_secrets(value)] == [b"s3cret", b"old", b"abcd"]


@pytest.mark.parametrize("name", sorted(d.VALIDATORS))
def test_validators_never_raise(name: str) -> None:
    for junk in (b"", b"\x00\xff", b"-" * 40, b"9" * 40, b"eyJ.eyJ.", b"ZZ99" + b"\xff" * 20):
        d.VALIDATORS[name](junk)
