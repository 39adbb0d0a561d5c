"""Mutual HMAC-SHA256 challenge-response over a shared secret, plus the model/partition fingerprint.

    client -> server  HELLO      [client nonce (32 B), client description]
    server -> client  CHALLENGE  [server nonce (32 B), server description, server proof]
    client -> server  RESPONSE   [client proof]
    server -> client  WELCOME    or ERROR naming both descriptions

    transcript = client nonce | server nonce | sha256(client description) | sha256(server description)
    proof      = HMAC-SHA256(secret, role label | transcript)   (labels differ, so no reflection)

Both nonces are fresh per connection, so a recorded handshake replayed to the listener fails; each side
verifies the other's proof before it trusts anything else. The descriptions (model, layer split, protocol
version) are bound into the proofs; when they differ, both sides raise FingerprintMismatch naming both.
Without a secret the same exchange runs with an empty key: it then only checks the fingerprints, which
is why listening beyond loopback without a secret needs an explicit insecure flag.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import queue
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import transport, wire
from .errors import AuthError, FingerprintMismatch, PipelineError, ProtocolError
from .transport import Connection, log
from .wire import MsgType

NONCE_BYTES = 32
SECRET_ENV = "TANDEM_SECRET"
_SERVER_LABEL = b"tandem-v1 server proof"
_CLIENT_LABEL = b"tandem-v1 client proof"


@dataclass(frozen=True)
class Credentials:
    secret: bytes | None  # None: no secret (loopback, or the explicit insecure flag)
    description: str  # what this rank holds: model fingerprint, split, protocol version

    @property
    def key(self) -> bytes:
        return self.secret or b""


def fingerprint(**fields) -> str:
    """A readable description of what a rank must agree on, e.g. fingerprint(model=..., split=...)."""
    return f"protocol={wire.PROTOCOL_VERSION} " + " ".join(f"{k}={v}" for k, v in sorted(fields.items()))


def load_secret(secret_file: str | None = None, env: str = SECRET_ENV) -> bytes | None:
    """The shared secret from --secret-file, else from the environment, else None."""
    if secret_file:
        with open(secret_file, "rb") as f:
            secret = f.read().strip()
        if not secret:
            raise ValueError(f"auth: secret file {secret_file} is empty")
        return secret
    value = os.environ.get(env, "")
    return value.encode() if value else None


def is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_secret_policy(host: str, secret: bytes | None, insecure_no_auth: bool) -> None:
    """Refuse to expose an unauthenticated rank beyond loopback unless explicitly asked to."""
    if secret is None and not is_loopback(host):
        if not insecure_no_auth:
            raise ValueError(
                f"auth: refusing to use {host} (not loopback) without a shared secret: pass --secret-file F "
                f"or set {SECRET_ENV} on both ranks (or, on a trusted private link only, --insecure-no-auth)")
        log(f"WARNING: --insecure-no-auth: anyone who can reach {host} can drive this rank")


def _proof(key: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.new(key, label + transcript, hashlib.sha256).digest()


def _transcript(nonce_c: bytes, nonce_s: bytes, desc_c: str, desc_s: str) -> bytes:
    return nonce_c + nonce_s + hashlib.sha256(desc_c.encode()).digest() + hashlib.sha256(desc_s.encode()).digest()


def _bytes_field(frame: wire.Frame, i: int, size: int | None, what: str) -> bytes:
    if len(frame.tensors) <= i:
        raise AuthError(f"auth: {frame.msg_type.name} frame lacks its {what}")
    t = frame.tensors[i]
    if t.dtype != "u1" or t.ndim != 1 or (size is not None and t.size != size):
        raise AuthError(f"auth: malformed {what} in {frame.msg_type.name}")
    return t.tobytes()


def _expect(conn: Connection, msg_type: MsgType) -> wire.Frame:
    frame = conn.recv_sync()
    if frame.msg_type != msg_type:
        raise AuthError(f"auth: expected {msg_type.name} during the handshake, got {frame.msg_type.name}")
    return frame


def _mismatch(mine: str, theirs: str, my_role: str, their_role: str) -> str:
    return f"auth: model/partition fingerprint mismatch: {my_role} has '{mine}', {their_role} has '{theirs}'"


def client_handshake(conn: Connection, creds: Credentials) -> None:
    """Run by the connecting rank; returns when both sides are authenticated and agree."""
    nonce_c = secrets.token_bytes(NONCE_BYTES)
    conn.send(MsgType.HELLO, 0, [_u8(nonce_c), wire.text_tensor(creds.description)])
    ch = _expect(conn, MsgType.CHALLENGE)
    nonce_s = _bytes_field(ch, 0, NONCE_BYTES, "server nonce")
    desc_s = _bytes_field(ch, 1, None, "server description").decode("utf-8", "replace")
    transcript = _transcript(nonce_c, nonce_s, creds.description, desc_s)
    if not hmac.compare_digest(_bytes_field(ch, 2, 32, "server proof"), _proof(creds.key, _SERVER_LABEL, transcript)):
        raise AuthError("auth: the listener failed to prove the shared secret (wrong secret on one side?)")
    conn.send(MsgType.RESPONSE, 0, [_u8(_proof(creds.key, _CLIENT_LABEL, transcript))])
    reply = conn.recv_sync() if desc_s == creds.description else None
    if reply is None:
        raise FingerprintMismatch(_mismatch(creds.description, desc_s, "this rank", "the listener"))
    if reply.msg_type != MsgType.WELCOME:
        raise AuthError(f"auth: expected WELCOME, got {reply.msg_type.name}")


def server_handshake(conn: Connection, creds: Credentials) -> None:
    """Run by the listening rank on each accepted connection."""
    hello = _expect(conn, MsgType.HELLO)
    nonce_c = _bytes_field(hello, 0, NONCE_BYTES, "client nonce")
    desc_c = _bytes_field(hello, 1, None, "client description").decode("utf-8", "replace")
    nonce_s = secrets.token_bytes(NONCE_BYTES)
    transcript = _transcript(nonce_c, nonce_s, desc_c, creds.description)
    conn.send(MsgType.CHALLENGE, 0, [_u8(nonce_s), wire.text_tensor(creds.description),
                                     _u8(_proof(creds.key, _SERVER_LABEL, transcript))])
    resp = _expect(conn, MsgType.RESPONSE)
    if not hmac.compare_digest(_bytes_field(resp, 0, 32, "client proof"), _proof(creds.key, _CLIENT_LABEL, transcript)):
        raise AuthError("auth: the peer failed to prove the shared secret (wrong secret or replayed handshake)")
    if desc_c != creds.description:
        msg = _mismatch(creds.description, desc_c, "the listener", "the connecting rank")
        conn.send(MsgType.ERROR, 0, [wire.text_tensor(msg)])
        raise FingerprintMismatch(msg)
    conn.send(MsgType.WELCOME, 0)


def _u8(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.uint8)


class Listener:
    """Accepts authenticated peers. Peers that fail the handshake are logged and closed, and the listener
    keeps waiting for the right one; a peer with a different model or split ends the wait loudly."""

    def __init__(self, host: str, port: int, creds: Credentials, *, timeout: float = 30.0,
                 handshake_timeout: float = 5.0, heartbeat: float | None = None, **conn_options):
        self.creds = creds
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.handshake_timeout = handshake_timeout
        self.conn_options = conn_options
        self.sock = transport.listen(host, port)
        self.address = self.sock.getsockname()[:2]
        self.rejected = 0

    MAX_PENDING = 8  # handshakes in progress at once; more connections wait in the kernel's backlog

    def accept(self, deadline: float | None = None) -> Connection:
        """The first peer that authenticates. Handshakes run in threads, so a silent or slow client
        costs one slot for handshake_timeout and never blocks the right peer."""
        end = None if deadline is None else time.monotonic() + deadline
        results: queue.Queue = queue.Queue()
        state = {"pending": 0, "done": False}
        lock = threading.Lock()

        def handshake(conn: Connection, peer: str) -> None:
            try:
                server_handshake(conn, self.creds)
                outcome = ("ok", conn)
            except FingerprintMismatch as e:
                outcome = ("mismatch", e)
            except Exception as e:  # anything else an unauthenticated peer provokes is a rejection too
                outcome = ("rejected", f"rejected a connection from {peer}: {type(e).__name__}: {e}")
            with lock:
                state["pending"] -= 1
                taken = state["done"]
            if not taken:  # recorded before the peer can see its connection close
                results.put(outcome)
            if outcome[0] != "ok" or taken:
                conn.close()

        try:
            while True:
                try:
                    kind, value = results.get_nowait()
                except queue.Empty:
                    kind = None
                if kind == "ok":
                    return value.start(timeout=self.timeout, heartbeat=self.heartbeat)
                if kind == "mismatch":
                    raise value
                if kind == "rejected":
                    self.rejected += 1
                    log(value)
                    continue
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise AuthError(f"auth: no authenticated peer connected to {self.address} within {deadline}s")
                if state["pending"] >= self.MAX_PENDING:
                    time.sleep(0.01)
                    continue
                self.sock.settimeout(0.05 if left is None else min(0.05, left))
                try:
                    sock, addr = self.sock.accept()
                except socket.timeout:
                    continue
                peer = f"{addr[0]}:{addr[1]}"
                conn = Connection(sock, timeout=self.handshake_timeout, peer=peer, **self.conn_options)
                with lock:
                    state["pending"] += 1
                threading.Thread(target=handshake, args=(conn, peer), daemon=True, name="tandem-handshake").start()
        finally:
            with lock:
                state["done"] = True  # handshakes still running close their connections themselves
            while not results.empty():  # finished but not taken
                kind, value = results.get_nowait()
                if kind == "ok":
                    value.close()

    def close(self) -> None:
        self.sock.close()


def dial(host: str, port: int, creds: Credentials, *, deadline: float = 30.0, timeout: float = 30.0,
         handshake_timeout: float = 5.0, heartbeat: float | None = None, **conn_options) -> Connection:
    """Connect (retrying with backoff), authenticate, and return a started connection."""
    sock = transport.connect(host, port, deadline=deadline, timeout=timeout)
    conn = Connection(sock, timeout=handshake_timeout, peer=f"{host}:{port}", **conn_options)
    try:
        client_handshake(conn, creds)
    except BaseException:
        conn.close()
        raise
    return conn.start(timeout=timeout, heartbeat=heartbeat)
