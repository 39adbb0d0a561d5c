"""Dead, stopped and misbehaving peers become typed exceptions within the deadline, never hangs; the
surviving rank 0 re-accepts a restarted peer and generates again."""

import os
import random
import signal
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest

from mlx_tandem.pipeline import auth, wire
from mlx_tandem.pipeline.errors import (PeerDisconnected, PeerTimeout, PipelineError, ProtocolError,
                                        SequenceError)
from mlx_tandem.pipeline.transport import Connection, connect
from mlx_tandem.pipeline.wire import MsgType
from pipeline_helpers.procs import SECRET, TIMEOUT, make_listener, rank0, spawn_rank1, stop
from pipeline_helpers.rank1 import toy_description
from pipeline_helpers.toy import greedy_reference

PROMPT = [5, 17, 3, 88, 41, 2, 9]
SLACK = 2.0  # scheduling slack on a loaded 2-core machine


def timed(fn):
    t0 = time.monotonic()
    try:
        fn()
    except PipelineError as e:
        return e, time.monotonic() - t0
    raise AssertionError("expected a PipelineError")


def endless(pipe):
    for _ in pipe.generate_step(np.array(PROMPT)):
        pass


def test_sigstopped_peer_is_a_deadline_error():
    listener = make_listener()
    proc = spawn_rank1(listener.address[1])
    try:
        pipe = rank0(listener)
        assert pipe.generate_batch([PROMPT], 3) == [greedy_reference(PROMPT, 3)]
        os.kill(proc.pid, signal.SIGSTOP)
        err, took = timed(lambda: pipe.generate_batch([PROMPT], 3))
        assert isinstance(err, PeerTimeout), err
        assert took < TIMEOUT + SLACK
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop(proc)
        listener.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_peer_killed_at_a_random_moment_then_restarted(seed):
    """Kill rank 1 at a random moment of a stream: typed error within the deadline; then a restarted
    rank 1 is accepted on the same listener and gives the right tokens."""
    listener = make_listener()
    proc = spawn_rank1(listener.address[1])
    try:
        pipe = rank0(listener, prefill_chunk=2)
        delay = random.Random(seed).uniform(0.0, 0.3)
        threading.Timer(delay, proc.kill).start()
        err, took = timed(lambda: endless(pipe))
        assert isinstance(err, (PeerDisconnected, PeerTimeout)), err
        assert took < delay + TIMEOUT + SLACK
        stop(proc)
        proc = spawn_rank1(listener.address[1])
        pipe.reconnect(listener, deadline=20)
        assert pipe.generate_batch([PROMPT], 4) == [greedy_reference(PROMPT, 4, chunk=2)]
        pipe.close()
        assert proc.wait(10) == 0
    finally:
        stop(proc)
        listener.close()


@pytest.fixture
def linked():
    """An authenticated pair of connections in this process: (listener side, dialing side)."""
    listener = make_listener()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("server", listener.accept(10)), daemon=True)
    t.start()
    client = auth.dial("127.0.0.1", listener.address[1], auth.Credentials(SECRET, toy_description(3)),
                       deadline=5, timeout=TIMEOUT, handshake_timeout=TIMEOUT)
    t.join(5)
    yield box["server"], client
    client.close()
    box["server"].close()
    listener.close()


def raw_frame(conn, msg_type, seq, step):
    """A well-formed frame with a chosen sequence number, written behind the Connection's back."""
    conn.sock.sendall(wire.encode_frame(msg_type, seq, step, [np.zeros(3, np.float32)]))


def test_duplicated_frame_names_step_and_message(linked):
    server, client = linked
    client.send(MsgType.FORWARD, 7, [np.zeros(3, np.float32)])
    assert server.recv(deadline=5).step == 7
    raw_frame(client, MsgType.FORWARD, client._send_seq - 1, 7)  # the same frame again
    with pytest.raises(SequenceError, match=r"duplicated.*FORWARD, step 7"):
        server.recv(deadline=5)
    with pytest.raises(SequenceError):  # the fault is final: the link is closed
        server.recv(deadline=5)


def test_reordered_frame_names_step_and_message(linked):
    server, client = linked
    raw_frame(client, MsgType.RESULT, client._send_seq + 1, 12)  # skips one
    with pytest.raises(SequenceError, match=r"out of order.*RESULT, step 12"):
        server.recv(deadline=5)


def test_garbage_after_the_handshake_is_a_protocol_error(linked):
    server, client = linked
    client.sock.sendall(os.urandom(200))
    with pytest.raises(ProtocolError):
        server.recv(deadline=5)


def test_oversized_frame_after_the_handshake(linked):
    server, client = linked
    head = wire.HEADER.pack(wire.MAGIC, wire.PROTOCOL_VERSION, MsgType.FORWARD, 0, 1, 0,
                            client._send_seq, 0, 2**63, 0, 0)[:-4]
    client.sock.sendall(head + struct.pack("<I", zlib.crc32(head)))
    with pytest.raises(ProtocolError, match="exceeds the cap"):
        server.recv(deadline=5)


def test_half_frame_then_close_is_never_delivered(linked):
    server, client = linked
    frame = wire.encode_frame(MsgType.FORWARD, client._send_seq, 3, [np.zeros(1000, np.float32)])
    client.sock.sendall(frame[:len(frame) // 2])
    client.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(PeerDisconnected, match="in the middle of a frame"):
        server.recv(deadline=5)


def test_half_frame_then_silence_is_a_deadline_error(linked):
    server, client = linked
    client._closed.set()  # stop the client's heartbeats, as if its process were frozen mid-send
    frame = wire.encode_frame(MsgType.FORWARD, client._send_seq, 3, [np.zeros(1000, np.float32)])
    client.sock.sendall(frame[:100])
    err, took = timed(lambda: server.recv())
    assert isinstance(err, PeerTimeout) and took < TIMEOUT + SLACK


def test_heartbeats_keep_an_idle_link_alive(linked):
    server, client = linked
    time.sleep(2 * TIMEOUT)
    client.send(MsgType.FORWARD, 1, [np.ones(2, np.float32)])
    assert server.recv(deadline=5).step == 1
    assert client.bytes_sent > 200  # heartbeats flowed


def test_recv_deadline_is_typed(linked):
    server, _ = linked
    err, took = timed(lambda: server.recv(deadline=0.3))
    assert isinstance(err, PeerTimeout) and took < 0.3 + SLACK


def test_connect_retries_until_the_listener_appears():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    err, took = timed(lambda: connect("127.0.0.1", port, deadline=0.5))
    assert isinstance(err, PeerTimeout) and "could not connect" in str(err) and took < 0.5 + SLACK
    box = {}
    t = threading.Timer(0.4, lambda: box.setdefault("srv", socket.create_server(("127.0.0.1", port))))
    t.start()
    sock = connect("127.0.0.1", port, deadline=10)  # refused at first, then succeeds with backoff
    sock.close()
    t.join()
    box["srv"].close()


def test_connection_rejects_bad_timeouts():
    a, b = socket.socketpair()
    with pytest.raises(ValueError, match="timeout"):
        Connection(a, timeout=0)
    a.close()
    b.close()


def fake_rank1(conn, reply):
    """A rank 1 in a thread (numpy only, no MLX) that answers the first FORWARD with reply(frame)."""
    def run():
        try:
            frame = conn.recv(deadline=10)
            msg_type, step, tensors = reply(frame)
            conn.send(msg_type, step, tensors)
        except PipelineError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


RESULT_OK = [np.array([1], np.int32), np.zeros(0, np.float32), np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32),
             np.zeros((0, 0), np.float32)]


@pytest.mark.parametrize("reply, match", [
    (lambda f: (MsgType.RESULT, f.step + 1, RESULT_OK), r"expected RESULT for step 0, got RESULT \(seq \d+, step 1\)"),
    (lambda f: (MsgType.FORWARD, f.step, RESULT_OK), r"expected RESULT for step 0, got FORWARD"),
    (lambda f: (MsgType.RESULT, f.step, RESULT_OK[:4]), r"expected RESULT with 5 tensors"),
    (lambda f: (MsgType.RESULT, f.step, [np.array([1, 2], np.int32)] + RESULT_OK[1:]), r"RESULT tokens"),
])
def test_rank0_rejects_replies_for_the_wrong_step_or_shape(linked, reply, match):
    from pipeline_helpers.toy import CONFIG, ToyModel
    from mlx_tandem.pipeline.pipeline import Pipeline

    server, client = linked
    fake_rank1(client, reply)
    pipe = Pipeline(ToyModel(CONFIG, (0, 3)), server)
    with pytest.raises(ProtocolError, match=match):
        pipe.generate_batch([PROMPT], 2)


def test_remote_error_reaches_rank0_with_its_message(linked):
    from pipeline_helpers.toy import CONFIG, ToyModel
    from mlx_tandem.pipeline.errors import RemoteError
    from mlx_tandem.pipeline.pipeline import Pipeline

    server, client = linked
    fake_rank1(client, lambda f: (MsgType.ERROR, f.step, [wire.text_tensor("out of memory on rank 1")]))
    with pytest.raises(RemoteError, match="step 0: out of memory on rank 1"):
        Pipeline(ToyModel(CONFIG, (0, 3)), server).generate_batch([PROMPT], 2)


def test_long_lived_scheduler_resumes_clean_after_rank1_restarts():
    """The server's pattern: one Scheduler over pipe.backend; rank 1 dies mid-batch -> PipelineError from
    step(); reconnect() + fail_all() leave no stale slot or job, and new sequences get the right tokens."""
    from mlx_tandem.batch import Scheduler, Sequence
    from mlx_tandem.pipeline.messages import MAX_SLOTS

    listener = make_listener()
    proc = spawn_rank1(listener.address[1])
    try:
        pipe = rank0(listener, prefill_chunk=2)
        sched = Scheduler(pipe.backend, prefill_chunk=2)
        old = [Sequence(PROMPT), Sequence(PROMPT[:3]), Sequence(PROMPT[2:])]
        for s in old:
            sched.add(s)
        while not all(s.history for s in old):
            sched.step()
        proc.kill()
        err, took = timed(lambda: [sched.step() for _ in range(1000)])
        assert isinstance(err, (PeerDisconnected, PeerTimeout)) and took < TIMEOUT + SLACK
        stop(proc)
        proc = spawn_rank1(listener.address[1])
        pipe.reconnect(listener, deadline=20)
        assert {e.seq for e in sched.fail_all(str(err))} == set(old)
        assert not pipe.backend.slots and not pipe.backend.pending and len(pipe.backend.free) == MAX_SLOTS
        new = [Sequence(PROMPT[1:], max_tokens=5), Sequence(PROMPT[:2], max_tokens=4)]
        got = {s: [] for s in new}
        for ev in sched.run(new):
            got[ev.seq].append(ev.token)
        assert [got[s] for s in new] == [greedy_reference(PROMPT[1:], 5, chunk=2), greedy_reference(PROMPT[:2], 4, chunk=2)]
        pipe.close()
        assert proc.wait(10) == 0
    finally:
        stop(proc)
        listener.close()
