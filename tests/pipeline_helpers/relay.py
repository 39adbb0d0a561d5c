"""A TCP relay that delays every byte by a fixed time each way (latency without netem).

    python relay.py LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
Listens on 127.0.0.1 and serves one connection; bandwidth is not limited (chunks are timestamped on
arrival and released DELAY_MS later, in order)."""

import queue
import socket
import sys
import threading
import time


def pump(src, dst, delay):
    q = queue.Queue()

    def release():
        while (item := q.get()) is not None:
            due, data = item
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=release, daemon=True)
    t.start()
    try:
        while data := src.recv(1 << 16):
            q.put((time.monotonic() + delay, data))
    except OSError:
        pass
    q.put(None)
    t.join()


def main():
    port, host, target, delay_ms = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    srv = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    a, _ = srv.accept()
    # rank 0 may still be loading when rank 1 reaches us: retry, as rank 1 itself would
    give_up = time.monotonic() + 60
    while True:
        try:
            b = socket.create_connection((host, target))
            break
        except ConnectionRefusedError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = threading.Thread(target=pump, args=(b, a, delay_ms / 1e3), daemon=True)
    t.start()
    pump(a, b, delay_ms / 1e3)
    t.join()


if __name__ == "__main__":
    main()
