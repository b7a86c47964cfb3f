"""Regenerate corpus.jsonl: realistic payloads with fake secrets in real formats (seeded).

Run from the repo root: `python tests/data/redact/make_corpus.py`. Every line of the output
is {"id", "category", "protocol", "payload" (latin-1 text of the bytes), "secrets": [...]}.
An entry with no secrets is a look-alike negative: it must come out byte-for-byte unchanged.
"""
# ruff: noqa: E501  (templates read better one per line)

from __future__ import annotations

import base64
import binascii
import json
import random
import string
import struct
from collections.abc import Callable
from pathlib import Path

R = random.Random(20261127)
ALNUM = string.ascii_letters + string.digits
HEXCH = "0123456789abcdef"
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def rs(n: int, alphabet: str = ALNUM) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def not_luhn(n: int) -> str:
    """An ordinary id: random digits whose Luhn check fails (a passing one is a card)."""
    body = rs(n - 1, string.digits)
    return body + str((int(luhn_digit(body)) + R.randint(1, 9)) % 10)


def card(valid: bool = True) -> str:
    prefix, n = R.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
                          ("2500", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16),
                          ("3530", 16), ("36", 14), ("62", 16), ("4", 13), ("4", 19)])
    body = prefix + rs(n - len(prefix) - 1, string.digits)
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + R.randint(1, 9)) % 10)
    num = body + check
    style = R.choice(["plain", "space", "dash"])
    if style == "plain" or n not in (15, 16):
        return num
    sep = " " if style == "space" else "-"
    groups = [num[:4], num[4:10], num[10:]] if n == 15 else [num[i : i + 4] for i in (0, 4, 8, 12)]
    return sep.join(groups)


def ssn(valid: bool = True) -> str:
    if valid:
        area = R.choice([R.randint(1, 665), R.randint(667, 899)])
        return f"{area:03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"
    area = R.choice([0, 666, R.randint(900, 999)])
    return f"{area:03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"


def iban(valid: bool = True) -> str:
    cc, bban = R.choice([("DE", rs(18, string.digits)), ("GB", "NWBK" + rs(14, string.digits)),
                         ("FR", rs(23, string.digits)), ("NL", "ABNA" + rs(10, string.digits)),
                         ("ES", rs(20, string.digits))])
    num = "".join(str(int(c, 36)) for c in bban + cc + "00")
    check = 98 - int(num) % 97
    if not valid:
        check = (check + R.randint(1, 50)) % 97 + 2
    raw = f"{cc}{check:02d}{bban}"
    if R.random() < 0.5:
        return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))
    return raw


def b62(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = B62[r] + out
    return out.rjust(width, "0")


def github() -> str:
    body = rs(30)
    return R.choice(["ghp", "gho", "ghu", "ghs", "ghr"]) + "_" + body + b62(
        binascii.crc32(body.encode()), 6)


def jwt() -> str:
    def enc(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    head = enc({"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    body = enc({"sub": rs(8), "iat": 1700000000 + R.randint(0, 10**6), "scope": "read write"})
    return f"{head}.{body}.{rs(43, ALNUM + '-_')}"


def password() -> str:
    return R.choice(["hunter2!", "S3cure-Pass_2024", "Tr0ub4dor&3", "correcthorsebattery",
                     "pa55w0rd#" + rs(4), rs(16, ALNUM + "!#%^*"), "Wint3r" + rs(6)])


def email() -> str:
    return f"{R.choice(['alice', 'bob.smith', 'j.doe+news', 'ops-team'])}{R.randint(1, 99)}@" \
        f"{R.choice(['example.com', 'mail.example.org', 'corp.example.co.uk'])}"


def phone() -> str:
    n = rs(4, string.digits)
    return R.choice([f"+1-415-555-{n}", f"(415) 555-{n}", f"+44 20 7946 {n}", f"+1415555{n}",
                     f"415.555.{n}", f"+49 30 1234{n}"])


def pem(style: str) -> tuple[str, str]:
    kind = R.choice(["RSA ", "EC ", "", "OPENSSH ", "ENCRYPTED "])
    body = [rs(64, ALNUM + "+/") for _ in range(6)]
    nl = {"lf": "\n", "crlf": "\r\n", "json": "\\n"}[style]
    text = f"-----BEGIN {kind}PRIVATE KEY-----{nl}" + nl.join(body) + \
        f"{nl}-----END {kind}PRIVATE KEY-----"
    return text, body[2]


def aws_secret() -> str:
    while True:
        s = rs(40, ALNUM + "/+")
        if any(c.isupper() for c in s) and any(c.isdigit() for c in s):
            return s


def uuid() -> str:
    h = rs(32, "0123456789abcdef")
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def pg_query(sql: str) -> bytes:
    body = sql.encode() + b"\x00"
    return b"Q" + struct.pack(">I", len(body) + 4) + body


def pg_startup(user: str, db: str) -> bytes:
    body = b"\x00\x03\x00\x00" + f"user\0{user}\0database\0{db}\0\0".encode()
    return struct.pack(">I", len(body) + 4) + body


def pg_password(pw: str) -> bytes:
    body = pw.encode() + b"\x00"
    return b"p" + struct.pack(">I", len(body) + 4) + body


def mysql_query(sql: str) -> bytes:
    body = b"\x03" + sql.encode()
    return struct.pack("<I", len(body))[:3] + b"\x00" + body


def resp(*words: str) -> bytes:
    out = b"*%d\r\n" % len(words)
    for w in words:
        out += b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode())
    return out


HOSTS = ["api.example.com", "checkout.internal:8443", "10.0.3.17:8080"]
UA = ["curl/8.4.0", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", "okhttp/4.12.0"]


def req(line: str, headers: list[str], body: str = "") -> str:
    hs = [f"Host: {R.choice(HOSTS)}", f"User-Agent: {R.choice(UA)}", *headers]
    if body:
        hs.append(f"Content-Length: {len(body)}")
    return line + "\r\n" + "\r\n".join(hs) + "\r\n\r\n" + body


Case = tuple[str, str | None, bytes | str, list[str]]


def positives() -> list[Case]:
    pw, tok, gh, jw = password(), rs(32), github(), jwt()
    akid = "AKIA" + rs(16, string.ascii_uppercase + "234567")
    sec = aws_secret()
    basic = base64.b64encode(f"svc-deploy:{pw}".encode()).decode()
    stripe = "sk_live_" + rs(24)
    c, e, p, s, ib = card(), email(), phone(), ssn(), iban()
    pem_lf, pem_l = pem("lf")
    pem_crlf, pem_c = pem("crlf")
    pem_json, pem_j = pem("json")
    sig = rs(64, "0123456789abcdef")
    gkey, fine, npm = "AIza" + rs(35), f"github_pat_{rs(22)}_{rs(59)}", "npm_" + rs(36)
    glpat = "glpat-" + rs(20, ALNUM + "-_")
    xoxb = f"xoxb-{rs(11, string.digits)}-{rs(12, string.digits)}-{rs(24)}"
    hook = f"T{rs(8, string.ascii_uppercase)}/B{rs(8, string.ascii_uppercase)}/{rs(24)}"
    rk = "rk_live_" + rs(24)
    phone_spaced = f"{R.randint(2, 9)}{rs(2, string.digits)} {R.randint(2, 9)}{rs(2, string.digits)} {rs(4, string.digits)}"
    cases: list[Case] = [
        ("http", "http", req(f"GET /login?user=bob&password={pw.replace('#', '%23')}&next=%2F "
                             "HTTP/1.1", ["Accept: */*"]), [pw.replace("#", "%23")]),
        ("http", "http", req("GET /v1/orders HTTP/1.1", [f"Authorization: Bearer {jw}"]), [jw]),
        ("http", "http", req("GET /repos HTTP/1.1", [f"Authorization: token {gh}"]), [gh]),
        ("http", "http", req("POST /deploy HTTP/1.1", [f"Authorization: Basic {basic}"]), [basic]),
        ("http", "http", req("GET / HTTP/1.1", [f"Proxy-Authorization: Basic {basic}"]), [basic]),
        ("http", "http", req("GET /bucket/key HTTP/1.1", [
            f"Authorization: AWS4-HMAC-SHA256 Credential={akid}/20240115/us-east-1/s3/"
            f"aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}",
            "x-amz-date: 20240115T101500Z"]), [akid, sig]),
        ("http", "http", req("GET /dash HTTP/1.1", [f"Cookie: sessionid={tok}; csrftoken={rs(32)}"
                                                     ]), [tok]),
        ("http", "http", "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: "
         f"session={tok}; Path=/; HttpOnly; Secure\r\n\r\n<html></html>", [tok]),
        ("http", "http", req("GET /v1/charges HTTP/1.1", [f"X-Api-Key: {stripe}"]), [stripe]),
        ("http", "http", req("GET /v1/me HTTP/1.1", [f"X-Auth-Token: {tok}"]), [tok]),
        ("http", "http", req("POST /login HTTP/1.1", ["Content-Type: application/x-www-form-"
                                                      "urlencoded"], f"username=bob&password="
                             f"{pw.replace('&', '%26')}&remember=1"), [pw.replace("&", "%26")]),
        ("http", "http", req("POST /oauth/token HTTP/1.1", ["Content-Type: application/json"],
                             json.dumps({"client_id": "web-ui", "client_secret": tok,
                                         "grant_type": "client_credentials"})), [tok]),
        ("http", "http", req("POST /api/users HTTP/1.1", ["Content-Type: application/json"],
                             json.dumps({"name": "Bob", "email": e, "phone": p,
                                         "password": pw})), [e, p, json.dumps(pw)[1:-1]]),
        ("http", "http", req("POST /pay HTTP/1.1", ["Content-Type: application/json"],
                             json.dumps({"amount": 1299, "currency": "EUR", "card_number": c,
                                         "iban": ib})), [c, ib]),
        ("http", "http", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps(
            {"access_token": jw, "token_type": "Bearer", "expires_in": 3600,
             "refresh_token": tok}), [jw, tok]),
        ("http", "http", req("POST /hook HTTP/1.1", ["Content-Type: application/json"],
                             json.dumps({"payload": json.dumps({"password": pw, "user": "x"})})),
         [json.dumps(json.dumps(pw))[3:-3]]),
        ("http", "http", req(f"GET /sso?redirect=%2Fcb%3Ftoken%3D{tok}%26x%3D1 HTTP/1.1", []),
         [tok]),
        ("http", "http", req("POST /upload HTTP/1.1", ["Content-Type: multipart/form-data; "
                                                       "boundary=XyZ"],
                             "--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nbob"
                             "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n"
                             f"\r\n{pw}\r\n--XyZ--\r\n"), [pw]),
        ("http", "http", req(f"GET /s3/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
                             f"{akid}%2F20240115%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature="
                             f"{sig} HTTP/1.1", []), [akid, sig]),
        ("http", "http", req(f"GET /maps/api/geocode/json?address=x&key={gkey} HTTP/1.1",
                             []), [gkey]),
        ("http", None, req("GET /ssn-check HTTP/1.1", ["Accept: application/json"],
                           f'{{"customer": {{"ssn": "{s}", "dob": "1984-02-11"}}}}'), [s]),
        ("sql", "postgres", pg_query(f"CREATE USER app WITH LOGIN PASSWORD '{pw}'"), [pw]),
        ("sql", "postgres", pg_query(f"ALTER ROLE reporting ENCRYPTED PASSWORD 'md5{sig[:32]}'"),
         [sig[:32]]),
        ("sql", "postgres", pg_query(f"ALTER USER bob\n  WITH PASSWORD\n  '{pw}';"), [pw]),
        ("sql", "mysql", mysql_query(f"CREATE USER 'app'@'%' IDENTIFIED BY '{pw}'"), [pw]),
        ("sql", "mysql", mysql_query("ALTER USER 'app'@'localhost' IDENTIFIED WITH "
                                     f"mysql_native_password BY '{pw}'"), [pw]),
        ("sql", "mysql", mysql_query(f"SET PASSWORD FOR 'app'@'%' = '{pw}'"), [pw]),
        ("sql", "postgres", pg_query(f"INSERT INTO customers (email, card) VALUES ('{e}', '{c}')"),
         [e, c]),
        ("sql", "mysql", mysql_query(f"UPDATE users SET password = '{pw}' WHERE id = 7"), [pw]),
        ("sql", "postgres", pg_startup("app", "orders") + pg_password(pw), [pw]),
        ("sql", None, pg_startup("report", "dw") + pg_password(pw) + pg_query("SELECT 1"), [pw]),
        ("redis", "redis", resp("AUTH", pw), [pw]),
        ("redis", "redis", resp("AUTH", "default", pw), [pw]),
        ("redis", "redis", resp("HELLO", "3", "AUTH", "app", pw, "SETNAME", "web"), [pw]),
        ("redis", "redis", resp("ACL", "SETUSER", "alice", "on", f">{pw}", "~cache:*", "+get"),
         [pw]),
        ("redis", "redis", resp("CONFIG", "SET", "requirepass", pw), [pw]),
        ("redis", "redis", f"AUTH {pw}\r\n".encode(), [pw]),
        ("redis", "redis", f"ACL SETUSER bob on >{pw} ~* +@all\r\n".encode(), [pw]),
        ("redis", "redis", f"CONFIG SET requirepass {pw}\r\n".encode(), [pw]),
        ("redis", "redis", resp("SET", "user:42:email", e), [e]),
        ("log", None, f"2024-01-15T10:00:00.123Z level=info msg=\"login ok\" user=bob password={pw}"
         f" latency_ms=42\n", [pw]),
        ("log", None, f"export AWS_ACCESS_KEY_ID={akid}\nexport AWS_SECRET_ACCESS_KEY={sec}\n",
         [akid, sec]),
        ("log", None, f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {sec}\n",
         [akid, sec]),
        ("log", None, f"cloning with GITHUB_TOKEN={gh} into /tmp/build\n", [gh]),
        ("log", None, f"fine-grained {fine} used\n", [fine]),
        ("log", None, f"//registry.npmjs.org/:_authToken={npm}\n", [npm]),
        ("log", None, f"gitlab: using {glpat} for CI\n", [glpat]),
        ("log", None, f"slack: {xoxb}\n", [xoxb]),
        ("log", None, f"notify url=https://hooks.slack.com/services/{hook}\n", [hook]),
        ("log", None, f"stripe.api_key = '{stripe}'\nrestricted {rk}\n", [stripe, rk]),
        ("log", None, f"loaded key:\n{pem_lf}\ndone\n", [pem_l]),
        ("log", None, f"loaded key:\r\n{pem_crlf}\r\ndone\r\n", [pem_c]),
        ("log", None, json.dumps({"level": "debug", "key": "x"})[:-1] + f', "pem": "{pem_json}"}}\n',
         [pem_j]),
        ("log", None, json.dumps({"level": "error", "msg": "payment failed", "card": c,
                                  "customer_email": e, "iban": ib}) + "\n", [c, e, ib]),
        ("log", None, f"db url postgres://orders:{pw.replace('@', '%40')}@db.internal:5432/orders"
         f"?sslmode=require\n", [pw.replace("@", "%40")]),
        ("log", None, f"call from {p} about ssn {s}\n", [p, s]),
        ("log", None, f"auth: token={jw} user=42\n", [jw]),
        ("log", None, f"DB_PASSWORD={pw}\nPGPASSWORD={pw}\nMYSQL_ROOT_PASSWORD='{pw}'\n", [pw]),
        ("log", None, f"database:\n  host: db.internal\n  password: {pw}\n  pool: 10\n", [pw]),
        ("log", None, f"exec /usr/bin/psql --host db --password {pw} orders\n", [pw]),
        ("log", None, f"exec curl -sS -u deploy:{pw} https://ci.example.com/api\n", [pw]),
        ("log", None, f"exec mysql -h db -uroot -p{pw} shop\n", [pw]),
        ("log", None, f"DefaultEndpointsProtocol=https;AccountName=shop;AccountKey={sec}==;"
         "EndpointSuffix=core.windows.net\n", [sec]),
        ("log", None, f"GET /blob?sv=2022-11-02&se=2024-01-16&sig={tok}%3D HTTP/1.1\n", [tok]),
        ("log", None, f"redis://:{pw.replace('@', '')}@cache.internal:6379/0\n",
         [pw.replace("@", "")]),
        ("log", None, f"mongodb+srv://app:{tok}@cluster0.example.net/db\n", [tok]),
        ("log", None, json.dumps({"type": "service_account", "private_key_id": "abc",
                                  "private_key": pem_json.replace("\\n", "\n"),
                                  "client_email": "svc@proj.iam.gserviceaccount.com"}) + "\n",
         [pem_j, "svc@proj.iam.gserviceaccount.com"]),
        ("http", "http", req("GET /v1/me HTTP/1.1", [f"X-Amz-Security-Token: {tok}{tok}"]),
         [tok + tok]),
        ("http", "http", req("GET /v4/projects HTTP/1.1", [f"Private-Token: {glpat}"]), [glpat]),
        ("http", "http", req("GET / HTTP/1.1", [f"authorization: bearer {tok}"]), [tok]),
        ("http", "http", req("POST /api/signup HTTP/1.1", ["Content-Type: application/json"],
                             json.dumps({"user": {"email": e, "ssn": s.replace("-", ""),
                                                  "card": {"number": c, "cvv": "123"}}})),
         [e, s.replace("-", ""), c]),
        ("http", "http", req(f"GET /track?e={e.replace('@', '%40')}&ref=mail HTTP/1.1", []),
         [e.replace("@", "%40")]),
        ("redis", "redis", resp("MIGRATE", "10.0.0.2", "6379", "", "0", "5000", "AUTH", pw,
                                "KEYS", "a"), [pw]),
        ("redis", "redis", resp("SET", "k", "v") + resp("AUTH", pw) + resp("GET", "k"), [pw]),
        ("redis", "redis", resp("HSET", "user:7", "phone", p, "email", e), [p, e]),
        ("sql", "postgres", pg_query(f"SELECT * FROM users WHERE email = '{e}' AND ssn = '{s}'"),
         [e, s]),
        ("sql", "postgres", pg_query(f"INSERT INTO accounts (id, login, password, created_at) VALUES "
                                     f"(42, 'bob', '{pw.replace(chr(39), chr(39) * 2)}', now())"),
         [pw.replace("'", "''")]),
        ("sql", "mysql", mysql_query(f"INSERT INTO `svc_tokens` (`name`, `token`) VALUES ('ci', '{tok}')"),
         [tok]),
        ("http", "http", req("POST /ws/Auth HTTP/1.1", ["Content-Type: text/xml; charset=utf-8",
                                                        'SOAPAction: "urn:Login"'],
                             "<soap:Envelope><soap:Header><wsse:Security><wsse:UsernameToken>"
                             "<wsse:Username>svc</wsse:Username><wsse:Password>" + pw.replace("&", "&amp;").replace("<", "&lt;") +
                             "</wsse:Password></wsse:UsernameToken></wsse:Security></soap:Header>"
                             "</soap:Envelope>"), [pw.replace("&", "&amp;").replace("<", "&lt;")]),
        ("log", None, f"Started POST \"/session\" Parameters: {{\"user\"=>\"bob\", \"password\"=>\"{pw}\"}}\n",
         [pw]),
        ("log", None, f"ftp login user=anonymous pass={tok} host=files.example.com\n", [tok]),
        ("log", None, f"support call from 1-800-555-{rs(4, string.digits)} re card ending 1111\n",
         ["1-800-555-"]),
        ("log", None, json.dumps({"msg": "upstream request", "headers": {
            "cookie": f"sid={tok}; theme=dark", "authorization": f"Bearer {jw}",
            "user-agent": "okhttp/4.12.0"}}) + "\n", [tok, jw]),
        ("log", None, f"exec redis-cli -h cache.internal -p 6379 -a {tok} INFO\n", [tok]),
        ("log", None, json.dumps({"ts": "2024-01-15T10:00:00Z", "event": json.dumps(
            {"request": {"body": json.dumps({"username": "bob", "password": tok})}})}) + "\n",
         [tok]),
        ("log", None, f"callback number {phone_spaced} (mobile)\n", [phone_spaced]),
        ("log", None, f"Server=db;Database=shop;User Id=app;Password={pw.replace(';', '')};"
         "Encrypt=true\n", [pw.replace(";", "")]),
    ]
    return cases


def negatives() -> list[Case]:
    sha = rs(40, "0123456789abcdef")
    trace = rs(32, "0123456789abcdef")
    cases: list[Case] = [
        ("http", "http", req("GET /api/v1/orders/8812?include=items&page=2 HTTP/1.1", [
            "Accept: application/json", f"X-Request-Id: {uuid()}",
            f"traceparent: 00-{trace}-{rs(16, '0123456789abcdef')}-01",
            f'If-None-Match: "{rs(32, "0123456789abcdef")}"'])),
        ("http", "http", "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
         f"Date: Mon, 15 Jan 2024 10:00:00 GMT\r\nETag: W/\"{rs(27, ALNUM)}\"\r\nContent-Length: "
         f"{R.randint(10, 9999)}\r\nCache-Control: max-age=3600\r\n\r\n" + json.dumps(
             {"id": uuid(), "status": "shipped", "total": 129.99, "items": R.randint(1, 9),
              "created_at": "2024-01-15T10:00:00Z", "version": "3.14.2"})),
        ("http", "http", req("GET /account/password-reset HTTP/1.1", ["Accept: text/html"])),
        ("http", "http", "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<h1>Forgot your "
         "password?</h1><p>Use the password reset page to choose a new password.</p>"),
        ("http", "http", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps(
            {"token_type": "Bearer", "expires_in": 3600, "scope": "read"})),
        ("http", "http", req("POST /v1/completions HTTP/1.1", ["Content-Type: application/json"],
                             json.dumps({"model": "m-1", "max_tokens": 256,
                                         "password_policy": "min 12 chars"}))),
        ("http", "http", req(f"GET /commits/{sha} HTTP/1.1", [f"X-Trace-Id: {trace}"])),
        ("http", "http", req("GET /static/app.3f9a2c.js HTTP/1.1", [
            "Accept-Encoding: gzip, br", "Referer: https://shop.example.com/cart?step=2"])),
        ("sql", "postgres", pg_query("SELECT id, email FROM users WHERE password_hash = $1 AND "
                                     "id = $2")),
        ("sql", "postgres", pg_query("UPDATE users SET password_hash = $1, updated_at = now() "
                                     "WHERE id = $2")),
        ("sql", "mysql", mysql_query("SELECT * FROM tokens WHERE id = ? AND revoked = 0")),
        ("sql", "postgres", pg_query("SELECT count(*) FROM orders WHERE created_at > "
                                     "'2024-01-15 00:00:00' AND status = 'paid'")),
        ("sql", "mysql", mysql_query("CREATE TABLE users (id BIGINT, password_hash CHAR(60), "
                                     "token_expiry DATETIME)")),
        ("redis", "redis", resp("GET", f"session:{uuid()}")),
        ("redis", "redis", resp("SET", "cache:page:42", "<html>ok</html>", "EX", "60")),
        ("redis", "redis", resp("INCRBY", "counter:orders", "17")),
        ("redis", "redis", b"+OK\r\n:42\r\n$5\r\nhello\r\n"),
        ("log", None, f"2024-01-15T10:00:00.{R.randint(100, 999)}Z level=info msg=\"request done\""
         f" method=GET path=/api/v1/orders status=200 duration_ms={R.randint(1, 900)} "
         f"trace_id={trace} bytes={R.randint(100, 99999)}\n"),
        ("log", None, f"deploy {sha[:12]} version=v2.31.4 build=20240115.3 commit={sha}\n"),
        ("log", None, f"order {not_luhn(16)} total 1299 items 3 ts {1700000000123 + R.randint(0, 10**6)}\n"),
        ("log", None, "user requested password reset page; sent password reset email template\n"),
        ("log", None, f"image sprite@2x.png loaded from cdn; dep @babel/core@7.23.{R.randint(0, 9)}\n"),
        ("log", None, f"integrity sha256-{rs(43, ALNUM + '+/')}= digest sha256:{rs(64, '0123456789abcdef')}\n"),
        ("log", None, f"pod checkout-7d9f8c6b5-x2x9q on node ip-10-0-3-17 uid {uuid()}\n"),
        ("log", None, f"conn from 10.0.3.17:51234 to 10.0.9.2:5432 pid={R.randint(100, 65000)}\n"),
        ("log", None, "git fetch git@github.com:shop/checkout.git refs/heads/main\n"),
        ("log", None, f"docker pull registry.example.com/checkout@sha256:{rs(64, '0123456789abcdef')}\n"),
        ("log", None, "the token expired; user must visit the password reset page\n"),
        ("log", None, f'{{"event": "login_failed", "reason": "bad password", "user_id": {R.randint(1, 9999)}, "request_id": "{uuid()}"}}\n'),
        ("log", None, f"latency p50=12.5ms p99={R.randint(100, 999)}ms qps={R.randint(100, 9999)} errors=0\n"),
        ("log", None, f"zip 94105-{R.randint(1000, 9999)} lat 37.7749 lon -122.4194 price $1,299.00\n"),
        ("log", None, f"build 2024.01.15-{R.randint(100, 999)} go1.21.5 linux/amd64 kernel 6.1.0-17-amd64\n"),
        ("log", None, "SET password_encryption = 'scram-sha-256'; SHOW password_encryption;\n"),
        ("http", "http", "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"api\", "
         "error=\"invalid_token\"\r\nContent-Type: application/json\r\n\r\n"
         '{"error": "invalid_token", "error_description": "The access token expired"}'),
        ("http", "http", req("GET /.well-known/jwks.json HTTP/1.1", ["Accept: application/json",
                             f"If-Modified-Since: Mon, 15 Jan 2024 10:0{R.randint(0, 9)}:00 GMT"])),
        ("http", "http", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps(
            {"keys": [{"kty": "RSA", "kid": rs(16, HEXCH), "use": "sig", "alg": "RS256",
                       "e": "AQAB"}]})),
        ("sql", "postgres", pg_query("SELECT u.id, u.email_verified, u.password_changed_at FROM "
                                     "users u WHERE u.id = $1")),
        ("sql", "mysql", mysql_query("ALTER TABLE accounts ADD COLUMN api_key_hash CHAR(64) NOT NULL")),
        ("redis", "redis", resp("CONFIG", "GET", "requirepass")),
        ("redis", "redis", b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
        ("redis", "redis", resp("XADD", "events", "*", "type", "login", "ok", "1")),
        ("log", None, "Access denied for user 'app'@'10.0.0.5' (using password: YES)\n"),
        ("log", None, f"bypass=1 spin=3 mapping=ok shipping=2 compass=north checksum={rs(8, HEXCH)}\n"),
        ("sql", "postgres", pg_query("INSERT INTO users (email, password_hash, created_at) VALUES "
                                     "($1, $2, now())")),
        ("http", "http", req("POST /ws HTTP/1.1", ["Content-Type: text/xml"],
                             "<config><passwordPolicy>strict</passwordPolicy><tokenTtl>3600"
                             "</tokenTtl></config>")),
        ("log", None, f"kernel: [{R.randint(1000, 99999)}.{R.randint(100000, 999999)}] eth0: link up 1000Mbps\n"),
        ("log", None, json.dumps({"cookie_consent": True, "cookies_enabled": "yes",
                                  "headers": {"accept": "*/*", "x-request-id": uuid()}}) + "\n"),
        ("log", None, f"batch ids 100 200 {R.randint(1000, 9999)} retried 3 times\n"),
    ]
    return cases


def lookalikes() -> list[Case]:
    """Numbers that fail their checksum: these must survive."""
    out: list[Case] = []
    for _ in range(20):
        out.append(("log", None, f"ref {card(valid=False)} ok\n", []))
        out.append(("log", None, f"acct {iban(valid=False)} ok\n", []))
        out.append(("log", None, f"id {ssn(valid=False)} ok\n", []))
    return out


def main() -> None:
    rows = []
    gens: list[Callable[[], list[Case]]] = [positives, negatives]
    for rnd in range(6):
        for gen in gens:
            for k, case in enumerate(gen()):
                cat, proto, payload, *rest = case
                secrets = rest[0] if rest else []
                data = payload.encode() if isinstance(payload, str) else payload
                rows.append({"id": f"{gen.__name__}-{rnd}-{k}", "category": cat,
                             "protocol": proto, "payload": data.decode("latin-1"),
                             "secrets": secrets})
    for k, (cat, proto, payload, secrets) in enumerate(lookalikes()):
        data = payload.encode() if isinstance(payload, str) else payload
        rows.append({"id": f"lookalike-{k}", "category": cat, "protocol": proto,
                     "payload": data.decode("latin-1"), "secrets": secrets})
    path = Path(__file__).with_name("corpus.jsonl")
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    print(f"{len(rows)} payloads -> {path}")


if __name__ == "__main__":
    main()
