"""Table tests per protocol and detector: what must vanish, what must stay, and the placeholder."""
# ruff: noqa: E501  (a table reads better one case per line)

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redact import Redactor, protocols

R = Redactor.default()
PW = "Zq9-hunter2-Xv"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
GH = "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5" + "3yYvHB"  # checksum need not hold: entropy does


def pg(sql: str) -> bytes:
    body = sql.encode() + b"\x00"
    return b"Q" + struct.pack(">I", len(body) + 4) + body


def my(sql: str) -> bytes:
    body = b"\x03" + sql.encode()
    return struct.pack("<I", len(body))[:3] + b"\x00" + body


STARTUP = b"\x00\x00\x00\x25\x00\x03\x00\x00user\x00app\x00database\x00orders\x00\x00"


def resp(*words: str) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(
        b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words
    )


# (protocol, payload, secrets that must vanish, substrings that must survive, placeholder)
CASES: list[tuple[str | None, bytes | str, list[str], list[str], str]] = [
    # ---- HTTP
    ("http", f"GET / HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer {JWT}\r\n\r\n",
     [JWT], ["Host: a.example", "Authorization: Bearer "], "auth"),
    ("http", "Authorization: Basic c3ZjOmh1bnRlcjI=\r\n", ["c3ZjOmh1bnRlcjI="], ["Basic"], "auth"),
    ("http", 'Authorization: Digest username="bob", realm="x", response="6629fae49393a05397450978507c4ef1"\r\n',
     ["6629fae49393a05397450978507c4ef1", "bob"], ["Digest"], "auth"),
    ("http", "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240115/us-east-1/s3/"
     "aws4_request, SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe\r\n",
     ["AKIAIOSFODNN7EXAMPLE", "fe5f80f77d5fa3beca038a248ff027d0445342fe"], [], "auth"),
    ("http", "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n", ["dXNlcjpwYXNz"], [], "auth"),
    ("http", "Cookie: sid=s%3AabcDEF123; theme=dark\r\n", ["abcDEF123"], ["Cookie: "], "cookie"),
    ("http", "Set-Cookie: session=9f8e7d6c5b4a; Path=/; HttpOnly\r\n", ["9f8e7d6c5b4a"],
     ["session=", "Path=/"], "cookie"),
    ("http", "X-Api-Key: live_abcdef0123456789\r\n", ["live_abcdef0123456789"], [], "api_key"),
    ("http", "X-Vault-Token: hvs.CAESIJ0123456789\r\n", ["hvs.CAESIJ0123456789"], [], "api_key"),
    ("http", f"GET /cb?user=bob&password={PW}&next=%2F HTTP/1.1\r\n", [PW], ["user=bob", "next=%2F"],
     "secret"),
    ("http", f"GET /cb?redirect=%2Fx%3Faccess_token%3D{PW}%26y%3D1 HTTP/1.1\r\n", [PW], ["%26y%3D1"],
     "secret"),
    ("http", f"username=bob&passwd={PW}&remember=1", [PW], ["remember=1"], "secret"),
    ("http", f'{{"client_id": "ui", "client_secret": "{PW}"}}', [PW], ['"client_id": "ui"'], "secret"),
    ("http", f'{{"body": "{{\\"password\\":\\"{PW}\\"}}"}}', [PW], [], "secret"),
    (None, '{"event": "{\\"body\\": \\"{\\\\\\"password\\\\\\": \\\\\\"' + PW + '\\\\\\"}\\"}"}',
     [PW], ['{"event"'], "secret"),
    ("http", f'{{"api_key": "{PW}", "token_type": "bearer", "max_tokens": 5}}', [PW],
     ['"token_type": "bearer"', '"max_tokens": 5'], "secret"),
    ("http", f"url=https://deploy:{PW}@git.example.com/repo.git", [PW], ["git.example.com"],
     "password"),
    (None, "dsn postgres://app:p@ss#w0rd@db:5432/x", ["p@ss#w0rd", "ss#w0rd"], ["@db:5432/x"], "password"),
    ("http", f'Content-Disposition: form-data; name="password"\r\n\r\n{PW}\r\n', [PW], [], "secret"),
    # ---- SQL over the wire
    ("postgres", pg(f"CREATE ROLE app LOGIN PASSWORD '{PW}'"), [PW], ["CREATE ROLE app"], "password"),
    ("postgres", pg(f"ALTER USER app WITH ENCRYPTED PASSWORD '{PW}'"), [PW], [], "password"),
    ("postgres", pg(f"ALTER USER app\nWITH PASSWORD\n'{PW}'"), [PW], [], "password"),
    ("postgres", STARTUP + b"p\x00\x00\x00\x13" + PW.encode() + b"\x00", [PW], ["database"],
     "password"),
    ("mysql", my(f"CREATE USER 'u'@'%' IDENTIFIED BY '{PW}'"), [PW], ["'u'@'%'"], "password"),
    ("mysql", my(f"ALTER USER 'u'@'%' IDENTIFIED WITH caching_sha2_password BY '{PW}'"), [PW], [],
     "password"),
    ("mysql", my(f"SET PASSWORD FOR 'u'@'%' = '{PW}'"), [PW], [], "password"),
    ("mysql", my(f"SET PASSWORD = PASSWORD('{PW}')"), [PW], [], "password"),
    ("postgres", b"Q\x00\x00\x00l" + f"INSERT INTO t (id, password) VALUES (1, '{PW}')".encode() + b"\x00",
     [PW], [], "password"),
    ("postgres", pg(f"INSERT INTO users (email_verified, password, name) VALUES (true, '{PW}', 'Bob')"),
     [PW], ["'Bob'", "true"], "password"),
    ("mysql", my(f"INSERT INTO `app`.`creds` (`id`, `api_key`) VALUES (7, '{PW}')"), [PW], ["(7, "],
     "password"),
    ("http", f"<soap:Envelope><wsse:Username>bob</wsse:Username><wsse:Password Type=\"x\">{PW}</wsse:Password></soap:Envelope>",
     [PW], ["<wsse:Username>bob"], "secret"),
    ("http", f"<config><dbPassword>{PW}</dbPassword></config>", [PW], [], "secret"),
    (None, f"params = {{:user => 'bob', :password => '{PW}'}}", [PW], ["'bob'"], "secret"),
    (None, f"$db = ['user' => 'bob', 'pass' => '{PW}'];", [PW], [], "secret"),
    (None, f"GET /login?user=bob&pass={PW}&pin=4321", [PW, "4321"], [], "secret"),
    # ---- Redis, RESP and inline
    ("redis", resp("AUTH", PW), [PW], ["AUTH"], "password"),
    ("redis", resp("AUTH", "alice", PW), [PW, "alice"], [], "password"),
    ("redis", resp("HELLO", "3", "AUTH", "alice", PW), [PW], ["HELLO"], "password"),
    ("redis", resp("ACL", "SETUSER", "alice", "on", f">{PW}", "~*"), [PW], ["alice", "~*"],
     "password"),
    ("redis", resp("CONFIG", "SET", "requirepass", PW), [PW], ["requirepass"], "password"),
    ("redis", f"AUTH {PW}\r\n", [PW], ["AUTH"], "password"),
    ("redis", f"HELLO 3 AUTH alice {PW}\r\n", [PW], [], "password"),
    ("redis", f"ACL SETUSER alice on >{PW} ~* +@all\r\n", [PW], ["+@all"], "password"),
    ("redis", f"CONFIG SET requirepass {PW}\r\n", [PW], [], "password"),
    # ---- vendor secrets (protocol unknown: sniffed, generic detectors)
    (None, "key AKIAIOSFODNN7EXAMPLE used", ["AKIAIOSFODNN7EXAMPLE"], [], "aws_access_key"),
    (None, "creds wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY x", ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
     [], "aws_secret_key"),
    (None, f"clone with {GH} ok", [GH], [], "github_token"),
    (None, "pat github_pat_11ABCDEFG0123456789abc_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW",
     ["github_pat_11ABCDEFG"], [], "github_token"),
    (None, "ci glpat-Ab3dEf6hIj9kLm2nOp5q", ["glpat-Ab3dEf6hIj9kLm2nOp5q"], [], "gitlab_token"),
    (None, "npm npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", ["npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"], [],
     "npm_token"),
    (None, "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", ["xoxb-1234"], [],
     "slack_token"),
    (None, "hook https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX",
     ["T0000/B0000"], ["hooks.slack.com"], "slack_webhook"),
    (None, "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", ["sk_live_4eC39HqLyjWDarjtT1zdp7dc"], [],
     "stripe_key"),
    (None, "stripe rk_test_4eC39HqLyjWDarjtT1zdp7dc", ["rk_test_4eC39HqLyjWDarjtT1zdp7dc"], [],
     "stripe_key"),
    (None, "maps AIzaSyA1234567890abcdefghijklmnopqrstuv", ["AIzaSyA1234567890"], [],
     "google_api_key"),
    (None, f"jwt {JWT} end", [JWT], [" end"], "jwt"),
    (None, "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3\nQk9tZ2\n-----END RSA PRIVATE KEY-----\n",
     ["MIIEpAIBAAKCAQEA0Z3", "Qk9tZ2"], [], "private_key"),
    (None, "-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBg\r\n-----END PRIVATE KEY-----\r\n",
     ["MIIEvQIBADANBg"], [], "private_key"),
    (None, '{"key": "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIBk\\n-----END EC PRIVATE KEY-----\\n"}',
     ["MHcCAQEEIBk"], ['{"key": "'], "private_key"),
    # ---- command lines (exec argv)
    (None, f"psql --password {PW} -h db", [PW], ["-h db"], "secret"),
    (None, f"app --api-key={PW} --verbose", [PW], ["--verbose"], "secret"),
    (None, f"curl -u deploy:{PW} https://x.example/api", [PW], ["deploy:"], "password"),
    (None, f"mysql -h db -uroot -p{PW} orders", [PW], ["orders"], "password"),
    # ---- PII
    (None, "card 4111 1111 1111 1111 exp", ["4111 1111 1111 1111"], ["exp"], "credit_card"),
    (None, "mc2 2223-0031-2200-3222.", ["2223-0031-2200-3222"], [], "credit_card"),
    (None, "amex 378282246310005", ["378282246310005"], [], "credit_card"),
    (None, "ssn 123-45-6788 on file", ["123-45-6788"], [], "ssn"),
    (None, "iban DE89 3704 0044 0532 0130 00 paid", ["DE89 3704 0044 0532 0130 00"], [" paid"], "iban"),
    (None, "mail alice.smith+x@mail.example.com today", ["alice.smith+x@mail.example.com"], [],
     "email"),
    (None, "to=alice%40example.com&x=1", ["alice%40example.com"], ["&x=1"], "email"),
    (None, "call +1 (415) 555-2671 now", ["555-2671"], [], "phone"),
    (None, "call 415-555-2671 now", ["415-555-2671"], [], "phone"),
    (None, "call 1-800-555-0199 now", ["800-555-0199"], [], "phone"),
    (None, "call 415 555 2671 now", ["415 555 2671"], [], "phone"),
    (None, '{"headers": {"cookie": "sid=abc123; theme=dark", "accept": "*/*"}}', ["abc123"],
     ['"accept": "*/*"'], "secret"),
    (None, "exec redis-cli -h cache -p 6379 -a Zq9-hunter2-Xv ping", [PW], ["ping", "6379"], "password"),
    (None, "exec sshpass -p Zq9-hunter2-Xv ssh deploy@host", [PW], [], "password"),
    (None, "call +44 20 7946 0958 now", ["7946 0958"], [], "phone"),
]


@pytest.mark.parametrize(("protocol", "payload", "gone", "kept", "kind"), CASES)
def test_redacts(
    protocol: str | None, payload: bytes | str, gone: list[str], kept: list[str], kind: str
) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    for proto in {protocol, None}:
        out = R.redact(data, proto)
        for secret in gone:
            assert secret.encode() not in out, (proto, out)
        for keep in kept:
            assert keep.encode() in out, (proto, out)
        assert f"[REDACTED:{kind}".encode() in out, out
        assert R.redact(out, proto) == out  # idempotent


def test_ips_are_an_option() -> None:
    line = b"conn from 10.1.2.3:5432 to 192.168.0.1"
    assert Redactor.default().redact(line) == line
    out = Redactor.default(redact_ips=True).redact(line)
    assert out == b"conn from [REDACTED:ip]:5432 to [REDACTED:ip]"


def test_sql_literals_are_an_option() -> None:
    q = pg("SELECT * FROM t WHERE name = 'Alice O''Hara' AND id = $1")
    assert Redactor.default().redact(q, "postgres") == q
    out = Redactor.default(sql_string_literals=True).redact(q, "postgres")
    assert b"Alice" not in out and b"[REDACTED:sql_literal]" in out and b"$1" in out
    assert Redactor.default(sql_string_literals=True).redact(q, "http") == q


def test_pseudonymize_is_stable_and_keyed() -> None:
    a = Redactor.default(pseudonymize_key=b"k1")
    b = Redactor.default(pseudonymize_key=b"k2")
    x = a.redact(b"card 4111111111111111 and 4111111111111111, mail bob@example.com")
    tokens = x.split(b"[REDACTED:credit_card:")
    assert len(tokens) == 3 and tokens[1][:12] == tokens[2][:12]
    assert b"4111" not in x and b"bob@" not in x
    assert a.redact(b"card 4111111111111111") != b.redact(b"card 4111111111111111")
    assert a.redact(x) == x


def test_counters_count_hits_by_rule() -> None:
    r = Redactor.default()
    r.redact(b"a 4111111111111111 b 5555555555554444 c bob@example.com")
    c = r.counters()
    assert c["credit_card"] == 2 and c["email"] == 1 and c["us_ssn"] == 0
    c["credit_card"] = 99  # a copy
    assert r.counters()["credit_card"] == 2


# ---------------------------------------------------------------- RESP parser fast paths
_resp_words = st.lists(st.sampled_from([b"AUTH", b"auth", b"GET", b"HELLO", b"SET", b"k", b"",
                                        b"x" * 70, b"CONFIG", b"ACL", b"\r\n"]),
                       min_size=0, max_size=4)


@st.composite
def _resp_like(draw: st.DrawFn) -> tuple[bytes, int]:
    words = draw(_resp_words)
    count = draw(st.sampled_from([len(words), len(words) + 1, 0, 65, 99999]))
    data = b"*%d\r\n" % count + b"".join(b"$%d\r\n%s\r\n" % (
        len(w) + draw(st.sampled_from([0, 0, 0, 1, -1])), w) for w in words)
    cut = draw(st.integers(min_value=0, max_value=len(data)))
    junk = draw(st.sampled_from([b"", b"x", b"\r\n", b"$", b"*1\r\n"]))
    prefix = draw(st.sampled_from([b"", b"ab\n"]))
    return prefix + data[:cut] + junk, len(prefix)


@settings(max_examples=600, deadline=None)
@given(_resp_like())
def test_resp_fast_parser_equals_slow(case: tuple[bytes, int]) -> None:
    buf, pos = case
    for b in (buf, bytearray(buf)):
        assert protocols._elements(b, pos) == protocols._elements_slow(b, pos)
        if protocols.resp_plain(b, pos):
            assert protocols.resp_probe(b, pos) == protocols.NOT_RESP
