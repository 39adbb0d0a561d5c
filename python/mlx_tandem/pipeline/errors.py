"""Typed exceptions of the pipeline: every fault a peer or the network can cause maps to one of these.

Callers catch `PipelineError` for "the pipeline is broken, reconnect or give up"; the subclasses say why.
ProtocolError is also a ValueError because it is raised for malformed input bytes.
"""


class PipelineError(Exception):
    """Base of every pipeline fault."""


class ProtocolError(PipelineError, ValueError):
    """A frame violates the wire protocol (bad magic, version, type, lengths, checksum, ...)."""


class FrameTooLarge(ProtocolError):
    """A frame announces more bytes than the configured cap (rejected before allocating)."""


class SequenceError(ProtocolError):
    """A frame arrived out of order or twice (sequence number or step id mismatch)."""


class AuthError(PipelineError):
    """The handshake failed: wrong secret, replayed handshake, or a peer that does not follow it."""


class FingerprintMismatch(AuthError):
    """Both peers authenticated, but they hold different models, splits or protocol versions."""


class PeerTimeout(PipelineError, TimeoutError):
    """The peer did not send, receive or heartbeat within the deadline (dead, stopped, or partitioned)."""


class PeerDisconnected(PipelineError, ConnectionError):
    """The peer closed the connection or it was reset (possibly in the middle of a frame)."""


class RemoteError(PipelineError):
    """The peer reported an error of its own (it sent an ERROR frame) and stopped serving this request."""
