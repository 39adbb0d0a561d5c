"""Two-rank pipeline: strict wire protocol (wire), authentication (auth), transport with deadlines and
heartbeats (transport), the last stage's server (stage), rank 0's `Pipeline` (pipeline), and the
checkpoint-level entry points `start_rank0` / `serve_rank1` (ranks) that `tandem launch` uses.

Importing this package loads no model code; `ranks` and `stage` import the model runner lazily."""

from .errors import (AuthError, FingerprintMismatch, FrameTooLarge, PeerDisconnected, PeerTimeout, PipelineError,
                     ProtocolError, RemoteError, SequenceError)
from .pipeline import Pipeline
from .ranks import serve_rank1, start_rank0

__all__ = ["Pipeline", "start_rank0", "serve_rank1", "PipelineError", "ProtocolError", "FrameTooLarge",
           "SequenceError", "AuthError", "FingerprintMismatch", "PeerTimeout", "PeerDisconnected", "RemoteError"]
