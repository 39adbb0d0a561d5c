"""TCP transport: one duplex connection per peer, a reader thread, heartbeats and deadlines everywhere.

Every blocking socket call has a deadline (the socket timeout), heartbeats flow while the application is
idle, so a peer that is dead, SIGSTOP'd or cut off turns into PeerTimeout / PeerDisconnected within
`timeout` seconds. Frames are delivered only once complete and checked; the first fault closes the
connection for good (a connection that lost a frame's boundary can never be trusted again) and is
re-raised by every later call.
"""

from __future__ import annotations

import queue
import random
import socket
import sys
import threading
import time
from typing import Sequence

import numpy as np

from . import wire
from .errors import PeerDisconnected, PeerTimeout, PipelineError, RemoteError
from .wire import Frame, MsgType

SOCKET_BUFFER = 4 << 20
HANDSHAKE_MAX_PAYLOAD = 8 << 10  # an unauthenticated peer cannot make us allocate more than this


def log(msg: str) -> None:
    print(f"[tandem] {msg}", file=sys.stderr, flush=True)


def configure_socket(sock: socket.socket, timeout: float) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.settimeout(timeout)


class Connection:
    """A framed, sequence-checked, heartbeating duplex connection.

    Before `start()` frames are exchanged synchronously (`send` / `recv_sync`, used by the handshake);
    after it, a reader thread parses frames into a queue and a heartbeat thread keeps the link warm.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = 30.0, heartbeat: float | None = None,
                 max_payload: int = wire.DEFAULT_MAX_PAYLOAD, checksum: bool = True, peer: str = "peer"):
        if timeout <= 0:
            raise ValueError(f"transport: timeout must be positive, got {timeout}")
        self.sock = sock
        self.timeout = timeout
        self.heartbeat = heartbeat if heartbeat is not None else timeout / 4
        self.max_payload = HANDSHAKE_MAX_PAYLOAD
        self._session_max_payload = max_payload
        self.checksum = checksum
        self.peer = peer
        configure_socket(sock, timeout)
        self._send_lock = threading.Lock()
        self._send_seq = 0
        self._last_send = time.monotonic()
        self._recv_seq = wire.SequenceChecker()
        self._frames: queue.Queue = queue.Queue()
        self._error: PipelineError | None = None
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        # Until start(), whoever runs the handshake (dial, Listener) closes a failed connection, after
        # recording the outcome: closing here first let a rejected peer see EOF before the
        # listener had counted it.
        self._started = False
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---- sending -------------------------------------------------------------------------------
    def send(self, msg_type: MsgType, step: int, tensors: Sequence[np.ndarray] = ()) -> None:
        self._raise_if_failed()
        with self._send_lock:
            data = wire.encode_frame(msg_type, self._send_seq, step, tensors, checksum=self.checksum)
            try:
                self.sock.sendall(data)
            except socket.timeout:
                self._fail(PeerTimeout(f"transport: sending {msg_type.name} (step {step}) to {self.peer} "
                                       f"did not finish within {self.timeout}s (peer stopped or link stalled)"))
            except OSError as e:
                self._fail(PeerDisconnected(f"transport: sending {msg_type.name} (step {step}) to {self.peer} failed: {e}"))
            self._send_seq += 1
            self._last_send = time.monotonic()
            self.bytes_sent += len(data)

    # ---- receiving -----------------------------------------------------------------------------
    def _readinto(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            try:
                n = self.sock.recv_into(view[got:])
            except socket.timeout:
                raise PeerTimeout(f"transport: no data from {self.peer} for {self.timeout}s "
                                  f"(dead, stopped or partitioned?)") from None
            except OSError as e:
                if self._closed.is_set():
                    raise PeerDisconnected(f"transport: connection to {self.peer} was closed locally") from None
                raise PeerDisconnected(f"transport: connection to {self.peer} failed: {e}") from None
            if n == 0:
                partial = " in the middle of a frame" if got else ""
                raise PeerDisconnected(f"transport: {self.peer} closed the connection{partial}")
            got += n
        self.bytes_received += got

    def _read_checked(self) -> Frame:
        frame = wire.read_frame(self._readinto, max_payload=self.max_payload)
        self._recv_seq.check(frame)
        return frame

    def recv_sync(self) -> Frame:
        """Read one non-heartbeat frame directly from the socket (handshake, before start())."""
        try:
            while True:
                frame = self._read_checked()
                if frame.msg_type != MsgType.HEARTBEAT:
                    return self._raise_remote(frame)
        except PipelineError as e:
            self._fail(e)

    def start(self, timeout: float | None = None, heartbeat: float | None = None) -> "Connection":
        """Authenticated: lift the payload cap to the session's, switch from the handshake deadline to the
        session's, and start the reader and heartbeat threads."""
        if timeout is not None:
            self.timeout = timeout
            self.heartbeat = heartbeat if heartbeat is not None else timeout / 4
            self.sock.settimeout(timeout)
        self.max_payload = self._session_max_payload
        self._started = True
        for target, name in ((self._reader, "reader"), (self._heartbeats, "heartbeat")):
            t = threading.Thread(target=target, name=f"tandem-{name}-{self.peer}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _reader(self) -> None:
        try:
            while not self._closed.is_set():
                frame = self._read_checked()
                if frame.msg_type == MsgType.ERROR:  # the peer gave up: its reason is the error
                    self._raise_remote(frame)
                if frame.msg_type != MsgType.HEARTBEAT:
                    self._frames.put(frame)
        except PipelineError as e:
            self._record(e)
        except Exception as e:  # never let the reader die silently
            self._record(PeerDisconnected(f"transport: reader for {self.peer} crashed: {e!r}"))
        self._frames.put(None)  # wake a waiting recv()

    def _heartbeats(self) -> None:
        while not self._closed.wait(self.heartbeat / 2):
            if time.monotonic() - self._last_send >= self.heartbeat:
                try:
                    self.send(MsgType.HEARTBEAT, 0)
                except PipelineError:
                    return

    def recv(self, deadline: float | None = None) -> Frame:
        """Next application frame. Waits while the peer is alive (heartbeats arrive); a dead or silent
        peer raises within `timeout`. `deadline` (seconds) bounds the wait for this frame as well."""
        end = None if deadline is None else time.monotonic() + deadline
        while True:
            # complete frames that arrived before a fault are still delivered (a SHUTDOWN followed by
            # the peer hanging up is an orderly end); then the fault is raised
            failed = self._error is not None or self._closed.is_set()
            wait = 0.2 if end is None else max(0.0, min(0.2, end - time.monotonic()))
            try:
                frame = self._frames.get_nowait() if failed else self._frames.get(timeout=wait)
            except queue.Empty:
                if failed:
                    self._raise_if_failed()
                if end is not None and time.monotonic() >= end:
                    raise PeerTimeout(f"transport: no reply from {self.peer} within {deadline}s") from None
                continue
            if frame is None:
                self._frames.put(None)
                self._raise_if_failed()
                raise PeerDisconnected(f"transport: connection to {self.peer} is closed")
            return self._raise_remote(frame)

    def _raise_remote(self, frame: Frame) -> Frame:
        if frame.msg_type == MsgType.ERROR:
            text = wire.tensor_text(frame.tensors[0]) if frame.tensors else "(no message)"
            self._fail(RemoteError(f"{self.peer} reported an error at step {frame.step}: {text}"))
        return frame

    # ---- failure and shutdown ------------------------------------------------------------------
    def _record(self, err: PipelineError) -> None:
        if self._error is None:
            self._error = err
        if self._started:
            self.close()

    def _fail(self, err: PipelineError):
        self._record(err)
        raise err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed.is_set():
            raise PeerDisconnected(f"transport: connection to {self.peer} is closed")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(host: str, port: int, *, deadline: float = 30.0, backoff: tuple[float, float] = (0.05, 2.0),
            timeout: float = 30.0) -> socket.socket:
    """Connect with bounded exponential backoff (with jitter) until `deadline` seconds have passed."""
    end = time.monotonic() + deadline
    delay, cap = backoff
    last = None
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise PeerTimeout(f"transport: could not connect to {host}:{port} within {deadline}s (last error: {last})")
        try:
            return socket.create_connection((host, port), timeout=min(left, timeout))
        except OSError as e:
            last = e
        time.sleep(min(delay * (0.5 + random.random()), max(0.0, end - time.monotonic())))
        delay = min(delay * 2, cap)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((host, port))
    except OSError as e:
        srv.close()
        raise OSError(e.errno, f"transport: cannot listen on {host}:{port}: {e.strerror}") from None
    srv.listen(8)
    return srv
