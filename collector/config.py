"""Daemon configuration: the embedded default TOML, overlaid by an optional file."""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/periscope/periscope.toml")


@dataclass(frozen=True)
class Paths:
    socket: str
    state_dir: str
    policy: str
    socket_group: str

    @property
    def events_db(self) -> Path:
        return Path(self.state_dir) / "events.db"

    @property
    def audit_log(self) -> Path:
        return Path(self.state_dir) / "audit.log"

    @property
    def anchors(self) -> Path:
        return Path(self.state_dir) / "audit.anchors"

    @property
    def grants(self) -> Path:
        return Path(self.state_dir) / "grants.json"


@dataclass(frozen=True)
class Capture:
    max_payload_bytes: int
    ringbuf_pages: int
    poll_interval_ms: int
    queue_max: int
    sample_every: int
    rate_limit: int
    l7: bool                 # connection records and L7 parsing (collector/capture/l7stage.py)
    l7_payload_bytes: int    # the payload cap on fds where an L7 protocol was detected
    preload: bool


@dataclass(frozen=True)
class Store:
    retention_seconds: int
    max_bytes: int


@dataclass(frozen=True)
class Server:
    max_frame_bytes: int
    idle_timeout_s: float
    read_timeout_s: float
    max_conns_per_uid: int
    max_conns: int
    send_buffer_events: int
    max_profiles: int
    max_reply_bytes: int


@dataclass(frozen=True)
class Metrics:
    listen: str
    max_targets: int                # distinct target label values in per-target metrics


@dataclass(frozen=True)
class Redaction:
    rules: str


@dataclass(frozen=True)
class OtlpExport:
    """[export.otlp]: redacted events as OTLP logs, L7 records as spans, RED metrics."""
    enabled: bool
    endpoint: str                   # base URL; /v1/logs, /v1/traces, /v1/metrics appended
    protocol: str
    compression: str
    timeout_s: float
    queue_size: int
    batch_size: int
    flush_interval_s: float
    logs: bool
    spans: bool
    metrics: bool
    metrics_interval_s: float
    max_targets: int
    headers: dict[str, str] = field(hash=False)

    def url(self, signal: str) -> str:
        """The OTLP/HTTP URL of one signal ("logs", "traces", "metrics")."""
        return f"{self.endpoint.rstrip('/')}/v1/{signal}"


@dataclass(frozen=True)
class JsonLogExport:
    """[export.jsonlog]: redacted events as JSON lines to a rotated file or to journald."""
    path: str                       # "" = off, "journald", or an absolute file path
    max_bytes: int
    keep: int
    queue_size: int


@dataclass(frozen=True)
class Export:
    otlp: OtlpExport
    jsonlog: JsonLogExport


@dataclass(frozen=True)
class Access:
    """[access]: access requests."""
    request_ttl_s: int              # a pending request expires unreviewed after this long


@dataclass(frozen=True)
class Notify:
    """[notify]: a command run with each break-glass audit record as JSON on stdin."""
    command: list[str] = field(hash=False)  # argv, no shell; [] = off
    timeout_s: float


@dataclass(frozen=True)
class Idp:
    """[idp]: OIDC identity-provider step-up (ID tokens verified offline against a JWKS)."""
    issuer: str                     # "" = off
    audience: str                   # the aud the tokens must carry (the client id, usually)
    client_id: str                  # for `periscope login` (device flow); "" = audience
    jwks: str                       # a JWKS file path, or an https:// URL fetched at start
    username_claim: str             # the claim that must name the connecting Unix user
    username_domain: str            # "example.com": the claim may be USER@example.com
    groups_claim: str               # IdP groups, bound to roles by policy [idp_groups]
    leeway_s: float                 # clock skew allowed on exp, iat and nbf
    max_age_s: float                # a token older than this (by iat) is not "fresh"


@dataclass(frozen=True)
class Config:
    paths: Paths
    capture: Capture
    store: Store
    server: Server
    metrics: Metrics
    redaction: Redaction
    export: Export
    access: Access
    notify: Notify
    idp: Idp
    source: str = field(default="<embedded>", compare=False)


# Tables of settings; a dotted name is a table nested in a group (see _GROUPS).
_SECTIONS: dict[str, type] = {
    "paths": Paths, "capture": Capture, "store": Store,
    "server": Server, "metrics": Metrics, "redaction": Redaction,
    "export.otlp": OtlpExport, "export.jsonlog": JsonLogExport,
    "access": Access, "notify": Notify, "idp": Idp,
}
# Tables that only hold tables: [export] holds [export.otlp] and [export.jsonlog].
_GROUPS: dict[str, type] = {"export": Export}

# key -> (min, max) for numeric settings
_RANGES: dict[str, tuple[float, float]] = {
    "capture.max_payload_bytes": (16, 4096),
    "capture.ringbuf_pages": (16, 1 << 18),
    "capture.poll_interval_ms": (1, 1000),
    "capture.queue_max": (1024, 1 << 24),
    "capture.sample_every": (0, 1 << 20),
    "capture.rate_limit": (0, 100_000_000),
    "capture.l7_payload_bytes": (16, 4096),
    "store.retention_seconds": (60, 10 * 365 * 86400),
    "store.max_bytes": (1 << 20, 1 << 40),
    "server.max_frame_bytes": (1024, 1 << 24),
    "server.idle_timeout_s": (0.1, 86400),
    "server.read_timeout_s": (0.1, 3600),
    "server.max_conns_per_uid": (1, 1 << 16),
    "server.max_conns": (1, 1 << 20),
    "server.send_buffer_events": (16, 1 << 20),
    "server.max_profiles": (1, 64),
    "server.max_reply_bytes": (1 << 20, 1 << 30),
    "metrics.max_targets": (1, 1000),
    "export.otlp.timeout_s": (0.1, 300),
    "export.otlp.queue_size": (16, 1 << 20),
    "export.otlp.batch_size": (1, 1 << 16),
    "export.otlp.flush_interval_s": (0.05, 60),
    "export.otlp.metrics_interval_s": (0.1, 3600),
    "export.otlp.max_targets": (1, 10_000),
    "export.jsonlog.max_bytes": (4096, 1 << 40),
    "export.jsonlog.keep": (0, 1000),
    "export.jsonlog.queue_size": (16, 1 << 20),
    "access.request_ttl_s": (1, 30 * 86400),
    "notify.timeout_s": (0.1, 60),
    "idp.leeway_s": (0, 300),
    "idp.max_age_s": (60, 7 * 86400),
}

# key -> the values it may take
_CHOICES: dict[str, tuple[str, ...]] = {
    # OTLP/gRPC is not shipped: grpcio costs +14 MB RSS and 18 MB on disk for a transport
    # the OpenTelemetry Collector's OTLP/HTTP receiver makes unnecessary.
    "export.otlp.protocol": ("http/protobuf",),
    "export.otlp.compression": ("none", "gzip"),
}

_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": (int, float), "bool": bool, "dict[str, str]": dict,
    "list[str]": list,
}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


def _check_endpoint(value: str) -> str | None:
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError as err:
        return f"is not a URL ({err})"
    if url.scheme not in ("http", "https") or not url.hostname:
        return "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:4318"
    if url.query or url.fragment:
        return "must not have a query or fragment (the signal paths /v1/... are appended)"
    return None


def _check_headers(value: dict[str, Any]) -> str | None:
    for name, v in value.items():
        if not _TOKEN.match(name):
            return f"has an invalid header name {name!r}"
        if not isinstance(v, str) or any(c in v for c in "\r\n\0"):
            return f"header {name!r} must be a string without CR, LF or NUL"
    return None


def _check_log_path(value: str) -> str | None:
    if value in ("", "journald") or value.startswith("/"):
        return None
    return 'must be "" (off), "journald" or an absolute file path'


def _check_command(value: list[Any]) -> str | None:
    if not all(isinstance(v, str) and v and "\0" not in v for v in value):
        return "must be a list of non-empty strings (argv; no shell)"
    if value and not value[0].startswith("/"):
        return "must start with an absolute path (no shell, no PATH lookup)"
    return None


def _check_jwks(value: str) -> str | None:
    if value == "" or value.startswith("/"):
        return None
    if value.startswith("https://") or value.startswith("http://127.0.0.1"):
        return _check_endpoint(value)
    return 'must be "", an absolute file path or an https:// URL'


def _check_issuer(value: str) -> str | None:
    if value and not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        return "must be an https:// URL (the iss claim the tokens carry)"
    return None


# key -> check(value) returning what is wrong with it, or None
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "export.otlp.endpoint": _check_endpoint,
    "export.otlp.headers": _check_headers,
    "export.jsonlog.path": _check_log_path,
    "notify.command": _check_command,
    "idp.jwks": _check_jwks,
    "idp.issuer": _check_issuer,
}


def embedded_text() -> str:
    return resources.files("collector").joinpath("defaults/periscope.toml").read_text()


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: invalid TOML: {err}") from err


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The table at a dotted section name ({} where absent)."""
    for part in name.split("."):
        data = data.get(part, {})
    return data


def _value(section: dict[str, Any], name: str, f: Any, source: str) -> Any:
    key = f"{name}.{f.name}"
    if f.name not in section:
        raise ConfigError(f"{source}: missing key {key}")
    value: Any = section[f.name]
    want = str(f.type)
    if (want != "bool" and isinstance(value, bool)) or not isinstance(value, _TYPES[want]):
        shown = "a table of strings" if want == "dict[str, str]" else want
        raise ConfigError(f"{source}: {key} must be {shown}, got {type(value).__name__}")
    lo_hi = _RANGES.get(key)
    if lo_hi and not lo_hi[0] <= section[f.name] <= lo_hi[1]:
        raise ConfigError(f"{source}: {key}={value} is outside [{lo_hi[0]}, {lo_hi[1]}]")
    choices = _CHOICES.get(key)
    if choices and value not in choices:
        raise ConfigError(f"{source}: {key}={value!r} is not one of: {', '.join(choices)}")
    check = _CHECKS.get(key)
    problem = check(value) if check else None
    if problem:  # never echo a table: header values are credentials
        shown = key if isinstance(value, dict) else f"{key}={value!r}"
        raise ConfigError(f"{source}: {shown} {problem}")
    return dict(value) if isinstance(value, dict) else \
        list(value) if isinstance(value, list) else value


def _build(data: dict[str, Any], source: str) -> Config:
    built: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        section = _table(data, name)
        built[name] = cls(**{f.name: _value(section, name, f, source) for f in fields(cls)})
    for group, cls in _GROUPS.items():
        built[group] = cls(**{f.name: built.pop(f"{group}.{f.name}") for f in fields(cls)})
    otlp: OtlpExport = built["export"].otlp
    if otlp.batch_size > otlp.queue_size:
        raise ConfigError(f"{source}: export.otlp.batch_size={otlp.batch_size} must not exceed "
                          f"export.otlp.queue_size={otlp.queue_size}")
    idp: Idp = built["idp"]
    if idp.issuer and not (idp.audience and idp.jwks):
        raise ConfigError(f"{source}: [idp] with an issuer needs audience and jwks too")
    return Config(**built, source=source)


def _merge(merged: dict[str, Any], name: str, section: Any, source: str) -> None:
    """Overlay one table of the file onto the defaults, refusing names we do not know."""
    if name not in _SECTIONS and name not in _GROUPS:
        raise ConfigError(f"{source}: unknown section [{name}]")
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    if name in _GROUPS:
        for sub, table in section.items():
            _merge(merged, f"{name}.{sub}", table, source)
        return
    target = _table(merged, name)
    for key, value in section.items():
        if key not in target:
            raise ConfigError(f"{source}: unknown key {name}.{key}")
        target[key] = value  # a table-valued key (headers) is replaced whole, not merged


def _overlay(base: dict[str, Any], over: dict[str, Any], source: str) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for name, section in over.items():
        _merge(merged, name, section, source)
    return merged


def load(path: str | Path | None = None, *, text: str | None = None) -> Config:
    """Embedded defaults, overlaid by `text` or the file at `path` (if it exists).

    An explicitly named file must exist; the default path may be absent.
    """
    base = _parse(embedded_text(), "<embedded>")
    if text is not None:
        return _build(_overlay(base, _parse(text, "<text>"), "<text>"), "<text>")
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return _build(base, "<embedded>")
        path = DEFAULT_CONFIG_PATH
    p = Path(path)
    try:
        raw = p.read_text()
    except OSError as err:
        raise ConfigError(f"{p}: cannot read config: {err.strerror}") from err
    return _build(_overlay(base, _parse(raw, str(p)), str(p)), str(p))


def with_paths(cfg: Config, **changes: str) -> Config:
    """Override [paths] keys (command-line flags, tests)."""
    return replace(cfg, paths=replace(cfg.paths, **changes))
