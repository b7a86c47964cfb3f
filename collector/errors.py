"""The one error hierarchy: everything periscope raises on purpose derives from PeriscopeError.

probes/ and redact/ are lower layers with their own errors (ProbeError, BpfError,
RuleError, DecodeError); collector translates them where it calls them, with
`raise ... from err`. protocol.FAULTS maps these classes to wire faults, in one table:
a client gets {code, name, message}, never a traceback.
"""

from __future__ import annotations


class PeriscopeError(Exception):
    """Base of every error periscope raises on purpose."""


# -- state and configuration (the daemon refuses to start, or keeps its old state) -----
class ConfigError(PeriscopeError):
    """The daemon config is invalid (message names the key)."""


class SelectorError(PeriscopeError, ValueError):
    """A target selector, level or duration is malformed (the message says how).

    Also a ValueError: argparse and input validators treat it as bad input.
    """


class PolicyError(PeriscopeError, ValueError):
    """The policy file is unreadable or invalid; the message names the file and the key."""


class GrantsError(PeriscopeError):
    """The grants file is unreadable, corrupt or cannot be written; the message says which."""


class RequestsError(PeriscopeError):
    """The access-requests file is unreadable, corrupt or cannot be written; says which."""


class AuditError(PeriscopeError):
    """Base of audit failures."""


class AuditWriteError(AuditError):
    """The record could not be made durable: the caller must deny and disclose nothing."""


class AuditCorruptError(AuditWriteError):
    """The log's tail fails its own hash: refuse to extend a chain we cannot trust (fail closed)."""


class AuthError(PeriscopeError):
    """The peer's credentials could not be read; the connection must be refused."""


class SocketPathError(PeriscopeError):
    """The socket path is unsafe or taken."""


class CaptureError(PeriscopeError):
    """The probes cannot be loaded or attached (translated from probes/ errors)."""


# -- request level: what one request is told; the connection and the daemon carry on ---
class RequestError(PeriscopeError):
    """A request failed in a way its client is told about (mapped in protocol.FAULTS)."""


class BadFrame(RequestError):
    """The frame is not UTF-8 JSON, nests too deep or exceeds the frame cap."""


class BadRequest(RequestError):
    """JSON, but the wrong shape or argument values."""


class UnknownOp(RequestError):
    """The op is not one of protocol.Op."""


class Denied(RequestError):
    """The policy said no (the message says why)."""


class NotFound(RequestError):
    """No such process, grant, unit or session."""


class Unavailable(RequestError):
    """The daemon cannot serve this now (shutting down, a dependency missing)."""


class AuditFailed(RequestError):
    """The audit record is not durable: fail closed, nothing is disclosed."""


class LimitExceeded(RequestError):
    """A connection or session cap was reached."""


class FrameTimeout(RequestError):
    """A frame was not completed within the read timeout."""
