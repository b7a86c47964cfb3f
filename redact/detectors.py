"""Pure validators run on regex candidates: checksums first (Luhn, mod-97, CRC32), entropy second.

Every validator takes the candidate bytes and returns the spans (relative to the candidate)
that really are secrets, usually ``[(0, len)]`` or ``[]``. None of them raises.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Sequence

from redact.values import acl_secrets, basic_auth, secret_value, sql_insert_values

Spans = Sequence[tuple[int, int]]
Validator = Callable[[bytes], Spans]

_B62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _all(value: bytes, ok: bool) -> Spans:
    return [(0, len(value))] if ok and value else []


def entropy(value: bytes) -> float:
    """Shannon entropy in bits per byte."""
    if not value:
        return 0.0
    n = len(value)
    counts: dict[int, int] = {}
    for b in value:
        counts[b] = counts.get(b, 0) + 1
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def luhn_ok(digits: bytes) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand_ok(d: bytes) -> bool:
    """Issuer prefix and length for the major brands (Mastercard 2-series included)."""
    n = len(d)
    p2, p4, p6 = int(d[:2]), int(d[:4]), int(d[:6])
    if d[:1] == b"4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # Amex
    if p4 == 6011 or p2 == 65 or 644 <= int(d[:3]) <= 649 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if 300 <= int(d[:3]) <= 305 or p2 in (36, 38, 39):
        return 14 <= n <= 19  # Diners
    if p2 == 62:
        return 16 <= n <= 19  # UnionPay
    if p2 in (50, 56, 57, 58) or p2 in (63, 67, 68, 69):
        return 13 <= n <= 19  # Maestro
    return False


_GROUP = re.compile(rb"\d+")


def _layout_ok(lens: list[int]) -> bool:
    """How cards are printed: one run, 4-4-4-4(-3), or Amex/Diners 4-6-5 / 4-6-4.

    A UUID whose first groups happen to be all digits (8-4-4) is not a card.
    """
    if len(lens) == 1 or lens in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(n == 4 for n in lens[:-1]) and 1 <= lens[-1] <= 4


def credit_card(value: bytes) -> Spans:
    """Luhn + brand on the whole candidate, else on runs of whole space-separated groups.

    The fallback finds a card glued to a neighbouring number ("qty 2 4111 1111 1111 1111");
    dash-joined groups are one token and are never split.
    """
    if b"-" in value:
        digits = value.replace(b"-", b"")
        ok = 12 <= len(digits) <= 19 and digits.isdigit() and luhn_ok(digits)
        ok = ok and _layout_ok([len(g) for g in value.split(b"-")])
        return [(0, len(value))] if ok and card_brand_ok(digits) else []
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(value)]
    if len(groups) > 8:  # a card has at most 5 groups; more is a run of numbers, not a card
        return []
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        best = None
        for j in range(len(groups) - 1, i - 1, -1):
            s, e = groups[i][0], groups[j][1]
            seps = value[s:e]
            digits = seps.replace(b" ", b"").replace(b"-", b"")
            if (
                12 <= len(digits) <= 19
                and _layout_ok([b - a for a, b in groups[i : j + 1]])
                and len(set(seps) - set(b"0123456789")) <= 1
                and luhn_ok(digits)
                and card_brand_ok(digits)
                and len(set(digits)) > 1
            ):
                best = (s, e, j)
                break
        if best:
            out.append((best[0], best[1]))
            i = best[2] + 1
        else:
            i += 1
    return out


def ssn(value: bytes) -> Spans:
    digits = bytes(c for c in value if 48 <= c <= 57)
    if len(digits) != 9:
        return []
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    ok = 0 < area < 900 and area != 666 and group > 0 and serial > 0
    return _all(value, ok)


_IBAN_LEN = {
    b"AD": 24, b"AE": 23, b"AT": 20, b"BE": 16, b"BG": 22, b"BR": 29, b"CH": 21, b"CY": 28,
    b"CZ": 24, b"DE": 22, b"DK": 18, b"EE": 20, b"ES": 24, b"FI": 18, b"FR": 27, b"GB": 22,
    b"GR": 27, b"HR": 21, b"HU": 28, b"IE": 22, b"IL": 23, b"IS": 26, b"IT": 27, b"LI": 21,
    b"LT": 20, b"LU": 20, b"LV": 21, b"MC": 27, b"MT": 31, b"NL": 18, b"NO": 15, b"PL": 28,
    b"PT": 25, b"RO": 24, b"SA": 24, b"SE": 24, b"SI": 19, b"SK": 24, b"SM": 27, b"TR": 26,
}


def iban(value: bytes) -> Spans:
    """mod-97 on the candidate; if that fails, on the candidate minus its last spaced chunk."""
    if _iban_ok(value):
        return [(0, len(value))]
    head = value.rsplit(b" ", 1)[0]
    return [(0, len(head))] if head != value and _iban_ok(head) else []


def _iban_ok(value: bytes) -> bool:
    compact = value.replace(b" ", b"").upper()
    want = _IBAN_LEN.get(compact[:2])
    if (want is not None and len(compact) != want) or not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        num = "".join(str(int(chr(c), 36)) for c in rearranged)
    except ValueError:
        return False
    return int(num) % 97 == 1


def _b62(n: int, width: int) -> bytes:
    out = bytearray()
    while n:
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return bytes(reversed(out)).rjust(width, b"0")


def github_checksum_ok(token: bytes) -> bool:
    """Classic GitHub tokens end with base62(crc32(random part)), 6 chars."""
    body = token.split(b"_", 1)[-1]
    if len(body) != 36:
        return False
    return _b62(binascii.crc32(body[:30]), 6) == body[30:]


def github_token(value: bytes) -> Spans:
    # The checksum is authoritative; a failing one still counts when the body looks random
    # (older or truncated tokens), so recall never depends on it.
    return _all(value, github_checksum_ok(value) or entropy(value.split(b"_")[-1]) >= 3.5)


def high_entropy(min_bits: float) -> Validator:
    def check(value: bytes) -> Spans:
        return _all(value, entropy(value) >= min_bits)

    return check


def aws_secret(value: bytes) -> Spans:
    """Bare 40-char base64 strings: need mixed classes and high entropy (not a hex SHA)."""
    classes = (
        re.search(rb"[A-Z]", value) and re.search(rb"[a-z]", value) and re.search(rb"[0-9]", value)
    )
    return _all(value, bool(classes) and value.count(b"/") <= 4 and entropy(value) >= 4.2)


def _b64url(part: bytes) -> bytes:
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def jwt(value: bytes) -> Spans:
    parts = value.split(b".")
    if len(parts) < 3:
        return []
    try:
        header = _b64url(parts[0])
        payload = _b64url(parts[1])
    except (ValueError, binascii.Error):
        return []
    ok = header.lstrip().startswith(b"{") and b'"alg"' in header and payload.lstrip()[:1] == b"{"
    return _all(value, ok)


_FILE_TLDS = frozenset(
    b"png jpg jpeg gif svg webp ico js mjs css map html htm json xml txt md py go rs java "
    b"class jar so dll exe zip gz tgz tar wasm woff woff2 ttf pdf csv log lock".split()
)


def email(value: bytes) -> Spans:
    tld = value.rsplit(b".", 1)[-1].lower()
    return _all(value, tld not in _FILE_TLDS)


def phone(value: bytes) -> Spans:
    digits = bytes(c for c in value if 48 <= c <= 57)
    lo = 8 if value.startswith(b"+") else 10
    ok = lo <= len(digits) <= 15 and len(set(digits)) > 2
    if ok and not any(c in value for c in b"+().-"):
        # Only spaces between the groups: looks like any three numbers unless it follows
        # the NANP plan (area code and exchange start with 2-9).
        local = digits[1:] if len(digits) == 11 else digits
        ok = len(local) == 10 and local[0] >= 50 and local[3] >= 50
    return _all(value, ok)


def ipv4(value: bytes) -> Spans:
    parts = value.split(b".")
    return _all(value, len(parts) == 4 and all(int(p) <= 255 for p in parts))


def always(value: bytes) -> Spans:
    return _all(value, True)


VALIDATORS: dict[str, Validator] = {
    "always": always,
    "credit_card": credit_card,
    "ssn": ssn,
    "iban": iban,
    "github_token": github_token,
    "aws_secret": aws_secret,
    "jwt": jwt,
    "email": email,
    "phone": phone,
    "ipv4": ipv4,
    "secret_value": secret_value,
    "acl_secrets": acl_secrets,
    "basic_auth": basic_auth,
    "sql_insert_values": sql_insert_values,
    "entropy_3": high_entropy(3.0),
    "entropy_3_5": high_entropy(3.5),
}
