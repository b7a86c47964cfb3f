"""OIDC ID-token verification, offline, against the issuer's JWKS (PyJWT does the JOSE work).

A token is an extra proof for the Unix user the kernel already named (SO_PEERCRED), never a
replacement: it must be signed by a key of the configured JWKS with an allowed algorithm
(RS256 or ES256: `none` and HMAC are refused before any key is touched), carry the
configured issuer and audience, be within exp/nbf/iat (with a small leeway) and fresh
(max_age_s), and its username claim must name the connecting Unix user. The token itself is
a secret: it is never logged or audited, only its subject, issuer and a hash prefix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt

from collector.access.auth import IdpIdentity
from collector.access.grants import write_atomic
from collector.config import Idp as IdpConfig
from collector.errors import Denied, Unavailable

log = logging.getLogger("periscope.idp")
ALGORITHMS = ("RS256", "ES256")  # asymmetric only: a public JWKS must never verify an HMAC
MAX_TOKEN = 16384
REFETCH_S = 300.0  # an unknown key id refetches a URL JWKS at most this often
FETCH_TIMEOUT_S = 5.0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def fetch_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as r:
        data: bytes = r.read(1 << 20)
    return data


class Jwks:
    """The issuer's keys: a local file, or a URL fetched at start and cached in the state dir
    (a restart without network keeps the last keys)."""

    def __init__(self, source: str, cache_path: str | None = None,
                 fetch: Callable[[str], bytes] = fetch_url) -> None:
        self.source, self.cache_path, self._fetch = source, cache_path, fetch
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self.error: str | None = None
        self.load()

    @property
    def remote(self) -> bool:
        return self.source.startswith(("https://", "http://"))

    def _parse(self, raw: bytes) -> dict[str, jwt.PyJWK]:
        doc = json.loads(raw)
        keys: dict[str, jwt.PyJWK] = {}
        for i, k in enumerate(doc.get("keys", []) if isinstance(doc, dict) else []):
            try:
                key = jwt.PyJWK.from_dict(k)
            except (jwt.exceptions.PyJWKError, jwt.exceptions.InvalidKeyError) as err:
                log.warning("JWKS %s: key %d skipped: %s", self.source, i, err)
                continue
            keys[str(k.get("kid", f"#{i}"))] = key
        if not keys:
            raise ValueError("no usable keys")
        return keys

    def load(self) -> None:
        """(Re)read the keys; on failure keep the old ones (or a cached copy) and say why."""
        try:
            if self.remote:
                raw = self._fetch(self.source)
                keys = self._parse(raw)
                if self.cache_path:
                    write_atomic(self.cache_path, raw)
            else:
                with open(self.source, "rb") as f:
                    keys = self._parse(f.read())
            with self._lock:
                self._keys, self.error = keys, None
        except (OSError, ValueError) as err:
            self.error = f"cannot load the identity provider's keys from {self.source}: {err}"
            log.error("%s", self.error)
            if not self._keys and self.remote and self.cache_path:
                try:
                    with open(self.cache_path, "rb") as f:
                        self._keys = self._parse(f.read())
                    log.warning("JWKS: using the copy cached at %s", self.cache_path)
                except (OSError, ValueError):
                    pass
        self._fetched = time.monotonic()

    def key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            keys = dict(self._keys)
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        if kid is not None and kid in keys:
            return keys[kid]
        if self.remote and time.monotonic() - self._fetched > REFETCH_S:
            self.load()  # the IdP may have rotated its keys
            return self.key(kid) if kid in self._keys else self._missing(kid, keys)
        return self._missing(kid, keys)

    def _missing(self, kid: str | None, keys: dict[str, jwt.PyJWK]) -> jwt.PyJWK:
        if not keys:
            raise Unavailable(self.error or "the identity provider's keys are not loaded")
        if kid is None:
            raise Denied("identity token refused: it names no key id (kid) and the JWKS "
                             "holds several keys")
        raise Denied(f"identity token refused: key id {kid[:64]!r} is not in the "
                         "identity provider's JWKS")


_CLAIM_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.exceptions.ExpiredSignatureError, "it has expired: log in again (periscope login)"),
    (jwt.exceptions.InvalidAudienceError, "wrong audience (aud): it was issued for another "
     "client"),
    (jwt.exceptions.InvalidIssuerError, "wrong issuer (iss)"),
    (jwt.exceptions.ImmatureSignatureError, "it is not valid yet (nbf or iat in the future)"),
    (jwt.exceptions.InvalidIssuedAtError, "its issue time (iat) is not valid"),
    (jwt.exceptions.MissingRequiredClaimError, "a required claim is missing"),
    (jwt.exceptions.InvalidSignatureError, "bad signature: it was not signed by the identity "
     "provider's key"),
    (jwt.exceptions.InvalidAlgorithmError, "its algorithm is not allowed for this key"),
)


class Verifier:
    """Checks ID tokens for one issuer (thread-safe)."""

    def __init__(self, cfg: IdpConfig, jwks: Jwks, clock: Callable[[], float] = time.time
                 ) -> None:
        self.cfg, self.jwks, self.clock = cfg, jwks, clock

    def verify(self, token: str, unix_user: str) -> IdpIdentity:
        """The identity a valid token proves for `unix_user`; raises Denied (or
        Unavailable when no keys could be loaded) with the reason, never the token."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            raise Denied(f"identity token refused: expected a compact JWT of at most "
                             f"{MAX_TOKEN} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.DecodeError as err:
            raise Denied("identity token refused: not a JWT") from err
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Denied(f"identity token refused: algorithm {str(alg)[:16]!r} is not "
                             f"allowed (only {', '.join(ALGORITHMS)})")
        kid = header.get("kid")
        key = self.jwks.key(kid if isinstance(kid, str) else None)
        cfg = self.cfg
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key.key, algorithms=[alg], audience=cfg.audience,
                issuer=cfg.issuer, leeway=cfg.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.exceptions.PyJWTError as err:
            why = next((text for cls, text in _CLAIM_ERRORS if isinstance(err, cls)),
                       f"invalid token ({type(err).__name__})")
            raise Denied(f"identity token refused: {why}") from err
        now = self.clock()
        iat = claims["iat"]
        if not isinstance(iat, (int, float)) or now - iat > cfg.max_age_s + cfg.leeway_s:
            raise Denied("identity token refused: it is not fresh (issued more than "
                             f"{int(cfg.max_age_s)}s ago): log in again (periscope login)")
        return IdpIdentity(
            subject=str(claims["sub"])[:256], issuer=cfg.issuer,
            username=self._username(claims, unix_user), groups=self._groups(claims),
            token_hash=token_hash(token), expires=float(claims["exp"]))

    def _username(self, claims: dict[str, Any], unix_user: str) -> str:
        name = claims.get(self.cfg.username_claim)
        if not isinstance(name, str) or not name:
            raise Denied(f"identity token refused: it has no {self.cfg.username_claim!r} "
                             "claim to match the Unix user")
        ok = {unix_user} | ({f"{unix_user}@{self.cfg.username_domain}"}
                            if self.cfg.username_domain else set())
        if name not in ok:
            raise Denied(f"identity token refused: it is for {name[:128]!r}, not for the "
                             f"connecting Unix user {unix_user!r}")
        return name

    def _groups(self, claims: dict[str, Any]) -> frozenset[str]:
        groups = claims.get(self.cfg.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            return frozenset()
        return frozenset(g for g in groups[:256] if isinstance(g, str) and 0 < len(g) <= 200)


def build(cfg: IdpConfig, cache_path: str | None) -> Verifier | None:
    """The verifier the config asks for, or None when [idp] is off."""
    if not cfg.issuer:
        return None
    return Verifier(cfg, Jwks(cfg.jwks, cache_path))
