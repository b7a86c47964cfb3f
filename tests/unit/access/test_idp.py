"""OIDC ID-token checks: a test IdP signs tokens; each bad one is refused with its reason."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from collector import config
from collector.access.idp import Jwks, Verifier, token_hash
from collector.errors import Denied, Unavailable
from tests.unit.access.fakeidp import AUDIENCE, FakeIdp, new_key


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp()


def verifier(idp: FakeIdp, tmp_path: Path, **over: object) -> Verifier:
    cfg = dataclasses.replace(config.load(text="").idp, issuer=idp.issuer, audience=AUDIENCE,
                              jwks=str(idp.write_jwks(tmp_path / "jwks.json")), **over)
    return Verifier(cfg, Jwks(cfg.jwks))


def test_valid_token_proves_the_same_unix_user(idp: FakeIdp, tmp_path: Path) -> None:
    tok = idp.token("alice", groups=["sre", "db-oncall"])
    got = verifier(idp, tmp_path).verify(tok, "alice")
    assert (got.subject, got.issuer, got.username) == ("00u-alice", idp.issuer, "alice")
    assert got.groups == {"sre", "db-oncall"} and got.token_hash == token_hash(tok)
    assert tok not in str(got.audit()) and set(got.audit()) == {"sub", "iss", "token_sha256"}


def _hs256_with_public_key(idp: FakeIdp) -> str:
    pem = idp.key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    import hashlib
    import hmac
    import json

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "kid": idp.kid}).encode())
    body = b64(json.dumps(idp.claims("alice")).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


@pytest.mark.parametrize(("name", "make", "message"), [
    ("expired", lambda i: i.token("alice", exp=int(time.time()) - 3600,
                                  iat=int(time.time()) - 7200), "it has expired"),
    ("wrong audience", lambda i: i.token("alice", aud="another-app"), "wrong audience"),
    ("wrong issuer", lambda i: i.token("alice", iss="https://evil.example"), "wrong issuer"),
    ("wrong signature", lambda i: i.token("alice", key=new_key()), "bad signature"),
    ("another user", lambda i: i.token("bob"), "it is for 'bob', not for the connecting Unix "
     "user 'alice'"),
    ("alg none", lambda i: i.none_token("alice"), "algorithm 'none' is not allowed"),
    ("HS256 keyed with the public key", _hs256_with_public_key,
     "algorithm 'HS256' is not allowed"),
    ("not yet valid", lambda i: i.token("alice", nbf=int(time.time()) + 3600), "not valid yet"),
    ("not fresh", lambda i: i.token("alice", iat=int(time.time()) - 13 * 3600), "not fresh"),
    ("no username claim", lambda i: i.token("alice", preferred_username=None),
     "no 'preferred_username' claim"),
    ("no exp", lambda i: jwt.encode({k: v for k, v in i.claims("alice").items() if k != "exp"},
                                    i.key, "RS256", headers={"kid": i.kid}),
     "a required claim is missing"),
    ("unknown key id", lambda i: i.token("alice", kid="rotated-away"),
     "key id 'rotated-away' is not in"),
    ("garbage", lambda i: "not.a.jwt", "not a JWT"),
])
def test_bad_tokens_are_refused_with_their_reason(idp: FakeIdp, tmp_path: Path, name: str,
                                                  make: object, message: str) -> None:
    v = verifier(idp, tmp_path)
    tok = make(idp)  # type: ignore[operator]
    with pytest.raises(Denied, match="identity token refused") as err:
        v.verify(tok, "alice")
    assert message in str(err.value), (name, str(err.value))
    assert tok not in str(err.value)


def test_username_domain_and_es256(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    idp = FakeIdp()
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    (tmp_path / "jwks.json").write_text(
        __import__("json").dumps({"keys": [{**jwk, "kid": "ec1", "alg": "ES256"}]}))
    cfg = dataclasses.replace(config.load(text="").idp, issuer=idp.issuer, audience=AUDIENCE,
                              jwks=str(tmp_path / "jwks.json"), username_claim="email",
                              username_domain="example.com")
    v = Verifier(cfg, Jwks(cfg.jwks))
    tok = jwt.encode(idp.claims("x", email="alice@example.com"), key, "ES256",
                     headers={"kid": "ec1"})
    assert v.verify(tok, "alice").username == "alice@example.com"
    with pytest.raises(Denied, match="not for the connecting Unix user 'bob'"):
        v.verify(tok, "bob")


def test_jwks_url_fetched_cached_and_unavailable(idp: FakeIdp, tmp_path: Path) -> None:
    import json

    cache = tmp_path / "cache.json"
    served = [json.dumps(idp.jwks()).encode()]
    jwks = Jwks("https://idp.example.test/keys", str(cache), fetch=lambda url: served[0])
    assert jwks.error is None and json.loads(cache.read_text()) == idp.jwks()

    def down(url: str) -> bytes:
        raise OSError("connection refused")
    again = Jwks("https://idp.example.test/keys", str(cache), fetch=down)
    assert "connection refused" in (again.error or "")
    assert again.key(idp.kid) is not None  # the cached copy serves a restart without network
    cold = Jwks("https://idp.example.test/keys", str(tmp_path / "none.json"), fetch=down)
    with pytest.raises(Unavailable, match="cannot load the identity provider's keys"):
        cold.key(idp.kid)


def test_require_idp_role_allows_payload_only_after_a_login_and_idp_groups_bind() -> None:
    from collector.access.auth import IdpIdentity, Principal
    from collector.access.decide import Request, decide
    from collector.access.policy import Policy
    from collector.selectors import Level

    policy = Policy.from_toml("""
[roles.stepup]
ops = ["trace"]
max_level = "payload"
targets = ["*"]
require_idp = true

[roles.dbre]
ops = ["trace"]
max_level = "payload"
targets = ["comm:postgres"]

[users]
alice = ["stepup"]

[idp_groups]
"DB Reliability" = ["dbre"]
""")
    alice = Principal(1000, 1000, "alice", frozenset(), frozenset(), 1, None)
    now = 1_800_000_000.0
    login = IdpIdentity("00u-alice", "https://idp", "alice", frozenset({"DB Reliability"}),
                        "ab" * 8, now + 600)
    want = Request("trace", ("pid:1",), Level.PAYLOAD)
    no = decide(policy, (), alice, want, {}, now)
    assert no.allowed and no.level is Level.META
    assert any("only after an identity-provider login" in n for n in no.narrowed), no.narrowed
    yes = decide(policy, (), dataclasses.replace(alice, idp=login), want, {}, now)
    assert yes.level is Level.PAYLOAD
    stale = decide(policy, (), dataclasses.replace(alice, idp=login), want, {}, now + 601)
    assert stale.level is Level.META  # an expired login no longer counts
    assert [r.name for r in policy.roles_for(alice)] == ["stepup"]
    assert [r.name for r in policy.roles_for(dataclasses.replace(alice, idp=login))] == [
        "stepup", "dbre"]
