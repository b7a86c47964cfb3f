"""What an SRE needs must come through untouched, and placeholders stay as they are."""

from __future__ import annotations

import pytest

from redact import Redactor

R = Redactor.default()

UNTOUCHED = [
    "X-Request-Id: 3f1c2d9e-6b1a-4c7e-9f0a-2b8d4e6f1a3c",
    '{"id": "25709835-2882-4454-a11a-bc6b4629b96d"}',  # digit-only UUID head, Luhn-valid
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 on main",
    'ETag: "33a64df551425fcc55e4d42a148795d9f25f89d4"',
    "integrity sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "digest sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "ts=2024-01-15T10:00:00.123Z ts_ms=1705312800123 took 12.5ms",
    "Date: Mon, 15 Jan 2024 10:00:00 GMT",
    "order 4111111111111112 total 1299",  # fails Luhn
    "id 1234567812345678",
    "version 1.2.3 build v10.4.12-rc1 node 18.19.0",
    "Host: api.example.com",
    "Content-Type: application/json; charset=utf-8",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0",
    "Accept-Encoding: gzip, deflate, br",
    "Content-Length: 348",
    "Use the password reset page to choose a new password.",
    "SELECT id FROM users WHERE password_hash = $1",
    "UPDATE users SET password = $1, token = $2 WHERE id = $3",
    "SELECT * FROM sessions WHERE token = ? AND user_id = ?",
    "INSERT INTO t (password) VALUES (%s)",
    '{"token_type": "Bearer", "expires_in": 3600, "max_tokens": 256}',
    '{"password": null, "secret_name": "db-creds", "password_hash": "x"}',
    "env DB_PASSWORD=${DB_PASSWORD} api_key=<your-key>",
    "GET session:7f1c HTTP/1.1 and redis key token:abc",
    "000-12-3456 666-12-3456 912-34-5678",
    "acct DE89370400440532013001",  # mod-97 fails
    "acct FR49 5558 4837 3992 3012 5140 589 ok",  # bad IBAN holding a Luhn-valid run
    "sprite@2x.png @babel/core@7.23.0",
    "git clone git@github.com:org/repo.git",
    "docker run -p 8080:80 -u 1000 nginx@sha256:abc",
    "WWW-Authenticate: Bearer realm=\"api\", Basic realm=\"x\"",
    "SET password_encryption = 'scram-sha-256'",
    '{"api_key_id": "k-1", "public_key": "ssh-ed25519 '
    'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}',
    "-WRONGPASS invalid username-password pair or user is disabled.",
    "Access denied for user 'app'@'10.0.0.5' (using password: YES)",
    "bypass=1 compass=north spin: 3 mapping: ok shipping=2",
    "qty 12 345 6789 and 1299 items, ids 100 200 3000",
    '{"cookie_consent": true, "cookies_enabled": "yes"}',
    "INSERT INTO users (email_verified, password_hash, name) VALUES (true, $1, 'Bob')",
    "<config><passwordPolicy>strict</passwordPolicy><timeout>30</timeout></config>",
    "datasource user=app password=****** token: <redacted>",
    "pk_live_51H8abcdEFGHijkl publishable",
    "conn 10.0.3.17:51234 -> 10.0.9.2:5432",
    "Authorization failed for user bob",
    "auth ok for bob after 3 tries",
    "[REDACTED:credit_card] [REDACTED:secret:0123456789ab]",
]


@pytest.mark.parametrize("text", UNTOUCHED)
def test_untouched(text: str) -> None:
    data = text.encode()
    assert R.redact(data) == data
    assert R.redact(data + b"\r\n", "http") == data + b"\r\n"


@pytest.mark.parametrize(
    "text",
    [
        b"password=[REDACTED:secret]&x=1",
        b"Cookie: [REDACTED:cookie]\r\n",
        b"*2\r\n$4\r\nAUTH\r\n$19\r\n[REDACTED:password]\r\n",
        b"ALTER USER x PASSWORD [REDACTED:password]",
    ],
)
def test_placeholders_are_kept(text: bytes) -> None:
    assert R.redact(text) == text


def test_ids_hashes_and_timestamps_in_bulk() -> None:
    """2000 random UUIDs, trace ids, SHAs, base64 digests, ETags, timestamps, versions."""
    import base64
    import hashlib
    import random
    import time
    import uuid

    rnd = random.Random(1)
    makers = [
        lambda: str(uuid.UUID(int=rnd.getrandbits(128))),
        lambda: f"{rnd.getrandbits(128):032x}",
        lambda: hashlib.sha1(str(rnd.random()).encode()).hexdigest(),
        lambda: hashlib.sha256(str(rnd.random()).encode()).hexdigest(),
        lambda: base64.b64encode(hashlib.md5(str(rnd.random()).encode()).digest()).decode(),
        lambda: "sha256-"
        + base64.b64encode(hashlib.sha256(str(rnd.random()).encode()).digest()).decode(),
        lambda: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rnd.randrange(2**31))) + ".123Z",
        lambda: f'W/"{rnd.getrandbits(32):x}-{rnd.getrandbits(40):x}"',
        lambda: f"00-{rnd.getrandbits(128):032x}-{rnd.getrandbits(64):016x}-01",
        lambda: f"v{rnd.randrange(10)}.{rnd.randrange(50)}.{rnd.randrange(100)}-rc.1",
        lambda: f"{rnd.random() * 10 ** rnd.randrange(1, 8):.2f}",
    ]
    for _ in range(2000):
        tok = rnd.choice(makers)()
        line = f'{{"value": "{tok}", "n": 1}} id={tok} at {tok}\n'.encode()
        assert R.redact(line) == line, tok
