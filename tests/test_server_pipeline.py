"""`tandem serve --nnodes 2` with rank 1 as `tandem launch --node-rank 1`, on the demo model: the same text as
one process (greedy and seeded), concurrent streams batched across both ranks, and the fault path: rank 1
killed mid-stream ends the stream with an error naming the cause, /health turns unhealthy, and a
restarted rank 1 brings the server back without restarting it."""

import concurrent.futures
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from mlx_tandem import demo_model
from server_helpers.proc import Server

PROMPTS = ["What is the capital of France?", "Name three colours.", "Who wrote Hamlet?", "What is 2 + 2?"]
TIMEOUT = "2"  # seconds of silence before a rank is declared dead


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank1(port):
    return subprocess.Popen([sys.executable, "-m", "mlx_tandem", "launch", "--node-rank", "1", "--model", "demo",
                             "--master-port", str(port), "--timeout", TIMEOUT, "--connect-timeout", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def ranks():
    try:
        demo_model.demo_gguf_path()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    port = free_port()
    r1 = rank1(port)
    srv = Server("--model", "demo", "--nnodes", "2", "--master-port", str(port), "--timeout", TIMEOUT,
                 "--max-concurrency", "8", "--default-temperature", "0")
    state = {"rank1": r1, "port": port}
    yield srv, state
    srv.close()
    state["rank1"].kill()
    state["rank1"].wait()


def generate_cli(prompt, *args):
    out = subprocess.run([sys.executable, "-m", "mlx_tandem", "generate", "--model", "demo", "--chat", "--prompt",
                          prompt, "--max-tokens", "20", *args], capture_output=True, text=True, timeout=300, check=True)
    return out.stdout[:-1]


def chat(client, prompt, **kw):
    r = client.chat.completions.create(model=client.models.list().data[0].id, max_tokens=20,
                                       messages=[{"role": "user", "content": prompt}], **kw)
    return r.choices[0].message.content


def test_two_ranks_give_one_process_text_greedy_and_seeded(ranks):
    srv, _ = ranks
    c = srv.client()
    assert chat(c, PROMPTS[0], temperature=0) == generate_cli(PROMPTS[0])
    assert chat(c, PROMPTS[1], temperature=0.9, seed=4) == generate_cli(PROMPTS[1], "--temp", "0.9", "--seed", "4")


def test_concurrent_streams_across_both_ranks_get_their_solo_text(ranks):
    srv, _ = ranks
    alone = [chat(srv.client(), p, temperature=0) for p in PROMPTS * 2]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda p: chat(srv.client(), p, temperature=0), PROMPTS * 2))
    assert together == alone


def test_rank1_killed_mid_stream_then_restarted(ranks):
    srv, state = ranks
    model = srv.client().models.list().data[0].id
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 4000, "temperature": 1.0, "seed": 2, "stream": True, "ignore_eos": True}
    errors = []
    with httpx.Client(base_url=srv.url, timeout=120) as h:
        with h.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = []
            for i, line in enumerate(r.iter_lines()):
                if i == 10:
                    state["rank1"].kill()  # mid-stream
                if '"error"' in line:
                    errors.append(line)
                lines.append(line)
            # the stream still ends properly (iter_lines also yields the blank line closing each event)
            assert [x for x in lines if x][-1] == "data: [DONE]"
        assert errors and ("rank" in errors[0] or "peer" in errors[0] or "connection" in errors[0].lower())
        end = time.monotonic() + 20
        while h.get("/health").status_code == 200 and time.monotonic() < end:
            time.sleep(0.2)
        assert h.get("/health").status_code == 503
        state["rank1"].wait()
        state["rank1"] = rank1(state["port"])  # restart: the server takes it back
        end = time.monotonic() + 120
        while h.get("/health").status_code != 200 and time.monotonic() < end:
            time.sleep(0.5)
        assert h.get("/health").status_code == 200
    assert chat(srv.client(), PROMPTS[0], temperature=0) == generate_cli(PROMPTS[0])
    assert srv.metric("tandem_faults_total") >= 1
