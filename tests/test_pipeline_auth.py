"""Handshake: wrong secrets, replayed handshakes, garbage and mismatched fingerprints never get in, and
the listener keeps serving the right peer afterwards."""

import socket
import threading
import time

import pytest

from mlx_tandem.pipeline import auth
from mlx_tandem.pipeline.errors import AuthError, FingerprintMismatch, PipelineError
from pipeline_helpers.procs import SECRET, TIMEOUT, make_listener, spawn_rank1
from pipeline_helpers.rank1 import toy_description


def accept_in_thread(listener, deadline=10):
    box = {}

    def run():
        try:
            box["conn"] = listener.accept(deadline)
        except Exception as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def good_dial(listener, split=3, secret=SECRET):
    creds = auth.Credentials(secret, toy_description(split))
    return auth.dial("127.0.0.1", listener.address[1], creds, deadline=5, timeout=TIMEOUT, handshake_timeout=TIMEOUT)


def assert_serves_right_peer_after(listener, t, box, rejected):
    conn = good_dial(listener)
    t.join(5)
    assert "conn" in box, box
    assert listener.rejected == rejected
    conn.close()
    box["conn"].close()
    listener.close()


def test_wrong_secret_is_refused_then_right_peer_accepted():
    listener = make_listener()
    t, box = accept_in_thread(listener)
    bad = spawn_rank1(listener.address[1], secret=b"wrong secret")
    out, err = bad.communicate(timeout=20)
    assert bad.returncode == 3, err
    assert "AuthError" in err and "failed to prove the shared secret" in err
    assert_serves_right_peer_after(listener, t, box, rejected=1)


def test_no_secret_against_a_secret_listener_is_refused():
    listener = make_listener()
    t, box = accept_in_thread(listener)
    with pytest.raises(AuthError, match="failed to prove"):
        good_dial(listener, secret=None)
    assert_serves_right_peer_after(listener, t, box, rejected=1)


class Recorder:
    """A relay that records what the client sends, so the handshake can be replayed verbatim."""

    def __init__(self, target_port):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.sent = bytearray()
        self.target_port = target_port
        threading.Thread(target=self._run, daemon=True).start()

    def _pump(self, src, dst, record):
        try:
            while data := src.recv(65536):
                if record:
                    self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self):
        client, _ = self.srv.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
        self._pump(upstream, client, False)


def test_replayed_handshake_is_refused():
    listener = make_listener()
    t, box = accept_in_thread(listener)
    rec = Recorder(listener.address[1])
    creds = auth.Credentials(SECRET, toy_description(3))
    conn = auth.dial("127.0.0.1", rec.port, creds, deadline=5, timeout=TIMEOUT, handshake_timeout=TIMEOUT)
    t.join(5)
    box.pop("conn").close()
    conn.close()
    recorded = bytes(rec.sent)
    assert len(recorded) > 100

    t, box = accept_in_thread(listener)
    with socket.create_connection(listener.address) as s:  # the attacker replays HELLO + RESPONSE
        s.sendall(recorded)
        s.settimeout(5)
        while s.recv(65536):  # the listener answers with a fresh challenge, then hangs up
            pass
    assert_serves_right_peer_after(listener, t, box, rejected=1)


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 4, b"TNDM" + b"\xff" * 60])
def test_garbage_instead_of_a_handshake(garbage):
    listener = make_listener()
    t, box = accept_in_thread(listener)
    with socket.create_connection(listener.address) as s:
        s.sendall(garbage)
        s.settimeout(5)
        assert s.recv(100) == b""  # closed without a word
    assert_serves_right_peer_after(listener, t, box, rejected=1)


def test_silent_clients_do_not_block_the_listener():
    listener = make_listener()
    t, box = accept_in_thread(listener)
    silent = [socket.create_connection(listener.address) for _ in range(3)]  # connect and say nothing
    t0 = time.monotonic()
    assert_serves_right_peer_after(listener, t, box, rejected=0)
    assert time.monotonic() - t0 < TIMEOUT  # served while the silent ones still hold their slots
    for s in silent:
        s.settimeout(5)
        assert s.recv(10) == b""  # and they are hung up on after the handshake deadline
        s.close()


def test_fingerprint_mismatch_names_both_sides():
    listener = make_listener(split=3)
    t, box = accept_in_thread(listener)
    with pytest.raises(FingerprintMismatch) as client_err:
        good_dial(listener, split=4)
    t.join(5)
    server_err = box["error"]
    assert isinstance(server_err, FingerprintMismatch)
    for err in (str(client_err.value), str(server_err)):
        assert "split=3" in err and "split=4" in err
    listener.close()


def test_secret_policy():
    with pytest.raises(ValueError, match="--insecure-no-auth"):
        auth.check_secret_policy("0.0.0.0", None, insecure_no_auth=False)
    auth.check_secret_policy("0.0.0.0", b"s", insecure_no_auth=False)
    auth.check_secret_policy("0.0.0.0", None, insecure_no_auth=True)
    auth.check_secret_policy("127.0.0.1", None, insecure_no_auth=False)
    auth.check_secret_policy("localhost", None, insecure_no_auth=False)


def test_secret_sources(tmp_path, monkeypatch):
    f = tmp_path / "secret"
    f.write_bytes(b"  s3cret\n")
    assert auth.load_secret(str(f)) == b"s3cret"
    f.write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        auth.load_secret(str(f))
    monkeypatch.setenv(auth.SECRET_ENV, "from-env")
    assert auth.load_secret(None) == b"from-env"
    monkeypatch.delenv(auth.SECRET_ENV)
    assert auth.load_secret(None) is None


def test_accept_deadline_is_typed():
    listener = make_listener()
    with pytest.raises(PipelineError, match="within 0.3s"):
        listener.accept(0.3)
    listener.close()
