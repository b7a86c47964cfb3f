"""Identity-provider tokens on the client: `periscope login` (OAuth 2.0 device flow, RFC 8628),
where a token comes from (--id-token-file, $PERISCOPE_ID_TOKEN, the login cache), and the
cache itself (0600, under the user's cache dir). The daemon verifies every token; the client
only carries it, and never prints it."""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from collector.cli.client import ClientError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_ENV = "PERISCOPE_ID_TOKEN"
HTTP_TIMEOUT_S = 10.0


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "periscope" / "id-token"


def claims(token: str) -> dict[str, Any]:
    """The token's claims, NOT verified (the daemon verifies): only to skip a cached token
    that has plainly expired and to say whose it is."""
    try:
        body = token.split(".")[1]
        out = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def token_from(file: str | None, env: dict[str, str] | None = None,
               cache: Path | None = None, now: float | None = None) -> str | None:
    """The ID token to present: --id-token-file, else $PERISCOPE_ID_TOKEN, else the cached
    login unless it has expired (an explicit token is always sent: the daemon says why
    it is refused)."""
    env = dict(os.environ) if env is None else env
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as err:
            raise ClientError(f"cannot read the ID token file {file}: {err.strerror}") from None
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip()
    path = cache_path() if cache is None else cache
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    exp = claims(token).get("exp")
    now = time.time() if now is None else now
    return token if isinstance(exp, (int, float)) and exp > now else None


def save(token: str, path: Path | None = None) -> Path:
    """Write the token for later commands: 0600 in a 0700 directory, atomically."""
    path = cache_path() if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".id-token-")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
            return r.status, json.loads(r.read(1 << 20))
    except urllib.error.HTTPError as err:  # the token endpoint answers 400 while pending
        try:
            return err.code, json.loads(err.read(1 << 20))
        except ValueError:
            return err.code, {}
    except (OSError, ValueError) as err:
        raise ClientError(f"identity provider at {url}: {err}") from None


def discover(issuer: str) -> dict[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
            doc = json.loads(r.read(1 << 20))
    except (OSError, ValueError) as err:
        raise ClientError(f"cannot read the identity provider's configuration {url}: "
                          f"{err}") from None
    if not isinstance(doc, dict) or "device_authorization_endpoint" not in doc:
        raise ClientError(f"{issuer} does not offer the device flow "
                          "(no device_authorization_endpoint)")
    return doc


def device_flow(issuer: str, client_id: str, scope: str = "openid profile email groups",
                out: TextIO = sys.stderr, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> str:
    """Run the device flow: show the code, poll until the user approved; the ID token."""
    doc = discover(issuer)
    status, dev = _post(doc["device_authorization_endpoint"],
                        {"client_id": client_id, "scope": scope})
    if status != 200 or "device_code" not in dev:
        raise ClientError(f"device authorization failed: {dev.get('error', status)}")
    uri = dev.get("verification_uri_complete") or dev.get("verification_uri")
    print(f"periscope: open {uri} and enter the code {dev.get('user_code')}", file=out,
          flush=True)
    interval = float(dev.get("interval", 5))
    end = clock() + float(dev.get("expires_in", 600))
    while clock() < end:
        sleep(interval)
        status, tok = _post(doc["token_endpoint"], {
            "grant_type": DEVICE_GRANT, "device_code": dev["device_code"],
            "client_id": client_id})
        if status == 200:
            if not isinstance(tok.get("id_token"), str):
                raise ClientError("the identity provider sent no id_token (is 'openid' in "
                                  "the client's scopes?)")
            return str(tok["id_token"])
        error = tok.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":  # RFC 8628 3.5: add 5 s to the interval
            interval += 5
            continue
        if error == "access_denied":
            raise ClientError("the login was denied at the identity provider")
        raise ClientError(f"login failed: {error or status}")
    raise ClientError("the login code expired before it was used: run periscope login again")
