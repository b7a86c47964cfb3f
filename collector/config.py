"""Daemon configuration: the embedded default TOML, overlaid by an optional file."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Metrics:
    listen: str


@dataclass(frozen=True)
class Redaction:
    rules: str


@dataclass(frozen=True)
class Config:
    paths: Paths
    capture: Capture
    store: Store
    server: Server
    metrics: Metrics
    redaction: Redaction
    source: str = field(default="<embedded>", compare=False)


_SECTIONS: dict[str, type] = {
    "paths": Paths, "capture": Capture, "store": Store,
    "server": Server, "metrics": Metrics, "redaction": Redaction,
}

# key -> (min, max) for numeric settings
_RANGES: dict[str, tuple[float, float]] = {
    "capture.max_payload_bytes": (16, 4096),
    "capture.ringbuf_pages": (16, 1 << 18),
    "capture.poll_interval_ms": (1, 1000),
    "capture.queue_max": (1024, 1 << 24),
    "capture.sample_every": (0, 1 << 20),
    "capture.rate_limit": (0, 100_000_000),
    "store.retention_seconds": (60, 10 * 365 * 86400),
    "store.max_bytes": (1 << 20, 1 << 40),
    "server.max_frame_bytes": (1024, 1 << 24),
    "server.idle_timeout_s": (0.1, 86400),
    "server.read_timeout_s": (0.1, 3600),
    "server.max_conns_per_uid": (1, 1 << 16),
    "server.max_conns": (1, 1 << 20),
    "server.send_buffer_events": (16, 1 << 20),
}


_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float)}


def embedded_text() -> str:
    return resources.files("collector").joinpath("defaults/periscope.toml").read_text()


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: invalid TOML: {err}") from err


def _build(data: dict[str, Any], source: str) -> Config:
    built: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        section = data.get(name, {})
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            key = f"{name}.{f.name}"
            if f.name not in section:
                raise ConfigError(f"{source}: missing key {key}")
            value: Any = section[f.name]
            if isinstance(value, bool) or not isinstance(value, _TYPES[str(f.type)]):
                raise ConfigError(f"{source}: {key} must be {f.type}, got {type(value).__name__}")
            lo_hi = _RANGES.get(key)
            if lo_hi and not lo_hi[0] <= section[f.name] <= lo_hi[1]:
                raise ConfigError(f"{source}: {key}={value} is outside [{lo_hi[0]}, {lo_hi[1]}]")
            kwargs[f.name] = value
        built[name] = cls(**kwargs)
    return Config(**built, source=source)


def _overlay(base: dict[str, Any], over: dict[str, Any], source: str) -> dict[str, Any]:
    merged = {k: dict(v) for k, v in base.items()}
    for name, section in over.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}]")
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        for key, value in section.items():
            if key not in merged[name]:
                raise ConfigError(f"{source}: unknown key {name}.{key}")
            merged[name][key] = value
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
