"""A test identity provider: its own RSA key and JWKS, tokens signed with PyJWT, and an OAuth
device-flow server on 127.0.0.1 (discovery, device authorization, token). No network."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

AUDIENCE = "periscope"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeIdp:
    def __init__(self, issuer: str = "https://idp.example.test", kid: str = "k1") -> None:
        self.issuer, self.kid = issuer, kid
        self.key = new_key()

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def claims(self, username: str, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iss": self.issuer, "aud": AUDIENCE, "sub": f"00u-{username}", "iat": now,
                "exp": now + 600, "preferred_username": username, "groups": ["sre"]}
        return {**base, **over}

    def token(self, username: str, key: Any = None, alg: str = "RS256",
              kid: str | None = None, **over: Any) -> str:
        return jwt.encode(self.claims(username, **over), key or self.key, algorithm=alg,
                          headers={"kid": kid or self.kid})

    def none_token(self, username: str) -> str:
        """alg none: a header and claims with no signature at all."""
        def b64(d: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
        return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': self.kid})}." \
               f"{b64(self.claims(username))}."


@contextmanager
def device_flow_server(idp: FakeIdp, username: str, pending: int = 1
                       ) -> Iterator[tuple[str, dict[str, int]]]:
    """An OIDC provider with the device flow on 127.0.0.1: answers authorization_pending
    `pending` times, then an ID token for `username`. Yields (issuer URL, call counts)."""
    calls = {"device": 0, "token": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, code: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._send(200, {"issuer": idp.issuer,
                                 "device_authorization_endpoint": idp.issuer + "/device",
                                 "token_endpoint": idp.issuer + "/token",
                                 "jwks_uri": idp.issuer + "/jwks"})
            elif self.path == "/jwks":
                self._send(200, idp.jwks())
            else:
                self._send(404, {})

        def do_POST(self) -> None:
            form = urllib.parse.parse_qs(self.rfile.read(
                int(self.headers.get("Content-Length", 0))).decode())
            if self.path == "/device" and form.get("client_id") == [AUDIENCE]:
                calls["device"] += 1
                self._send(200, {"device_code": "dev-123", "user_code": "WDJB-MJHT",
                                 "verification_uri": idp.issuer + "/activate",
                                 "expires_in": 60, "interval": 1})
            elif self.path == "/token" and form.get("device_code") == ["dev-123"]:
                calls["token"] += 1
                if calls["token"] <= pending:
                    self._send(400, {"error": "authorization_pending"})
                else:
                    self._send(200, {"id_token": idp.token(username), "token_type": "Bearer"})
            else:
                self._send(400, {"error": "invalid_request"})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    idp.issuer = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield idp.issuer, calls
    finally:
        srv.shutdown()
        srv.server_close()
