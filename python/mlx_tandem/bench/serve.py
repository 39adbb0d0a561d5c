"""`tandem bench serve`: the HTTP server under concurrent streaming clients, one process (one pinned core)
and two pipeline ranks (one pinned core each), on the packaged demo model and the ~1B random Llama.

For each concurrency c, c client threads each send --rounds streaming /v1/completions requests of
--tokens tokens (ignore_eos, so every request has the same length) at the same time. Reported: decode
tokens/s = the tokens all c requests receive while all of them decode (from the last first token to the
first last token), per second; end-to-end tokens/s (all completion tokens / wall time, prefill included), time to first token and
inter-token latency (p50 / p99 over all requests), and the decode ratio to the anchor measured in the
same run: the same requests sent one after another (no batching). Clients run in this process on the other core (one process mode) or share the
cores with the ranks (two ranks): their cost is part of what is measured.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

from .tp import LLAMA_1B, write_checkpoint


def add_arguments(parser):
    parser.add_argument("--models", default="demo,llama1b", help="comma list: demo, llama1b")
    parser.add_argument("--modes", default="single,pipeline", help="comma list: single, pipeline")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32", help="comma list of concurrent clients")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="prompt tokens per request")
    parser.add_argument("--rounds", type=int, default=1, help="requests per client at each concurrency")
    parser.add_argument("--anchor-requests", type=int, default=4, help="sequential requests for the anchor")
    parser.add_argument("--cache-dir", default=os.path.join(os.environ.get("TANDEM_CACHE", os.path.expanduser(
        "~/.cache/mlx_tandem")), "bench-tp"), help="where the random checkpoint is written once")


def _log(*x):
    print(*x, file=sys.stderr, flush=True)


def _model_path(name: str, cache_dir: str) -> str:
    if name == "demo":
        from ..commands.generate import resolve_model
        return resolve_model("demo")
    if name != "llama1b":
        raise ValueError(f"bench serve: unknown model {name!r} (demo, llama1b)")
    path = write_checkpoint(os.path.join(cache_dir, "llama1b"), LLAMA_1B, _log)
    tj = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tj):  # the server needs a tokenizer; words "w<i>" for the random model's ids
        from tokenizers import Tokenizer, decoders
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import WhitespaceSplit

        tok = Tokenizer(WordLevel({f"w{i}": i for i in range(LLAMA_1B["vocab_size"])}, unk_token="w0"))
        tok.pre_tokenizer = WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.save(tj)
    return path


class _Serving:
    """The server (and rank 1) as processes; `url` once ready."""

    def __init__(self, path: str, mode: str, max_concurrency: int):
        env = {**os.environ, "TANDEM_NUM_THREADS": "1"}
        base = [sys.executable, "-m", "mlx_tandem"]
        serve = ["serve", "--model", path, "--port", "0", "--max-concurrency", str(max_concurrency),
                 "--max-queue", "256", "--default-temperature", "0", "--no-memory-check"]
        self.procs = []
        if mode == "pipeline":
            port = _free_port()
            serve += ["--nnodes", "2", "--master-port", str(port), "--split", "streamed"]
            rank1 = ["launch", "--node-rank", "1", "--model", path, "--master-port", str(port), "--split", "streamed",
                     "--no-memory-check"]
            self.procs.append(subprocess.Popen(["taskset", "-c", "1", *base, *rank1], env=env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        self.server = subprocess.Popen(["taskset", "-c", "0", *base, *serve], env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
        self.procs.append(self.server)
        self.log = []
        for line in self.server.stderr:
            self.log.append(line)
            m = re.search(r"on (http://[\d.]+:\d+)/v1", line)
            if m:
                self.url = m.group(1)
                break
        else:
            raise RuntimeError("bench serve: the server did not start:\n" + "".join(self.log))
        for p in self.procs:  # keep draining stderr so no process blocks on a full pipe
            threading.Thread(target=lambda p=p: [None for _ in p.stderr], daemon=True).start()

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


_GENERATE = """
import sys, time, mlx.core as mx
from mlx_tandem.generate import load, token_steps
from mlx_tandem.sampling import SamplingParams
model, _ = load(sys.argv[1], memory_check=False)
prompt, n = mx.array([int(t) for t in sys.argv[2].split(",")], mx.int32), int(sys.argv[3])
rates = []
for _ in range(3):
    steps = token_steps(model, prompt, SamplingParams())
    next(steps)
    t0 = time.perf_counter()
    for _ in range(n):
        next(steps)
    rates.append(n / (time.perf_counter() - t0))
    steps.close()
print(sorted(rates)[1])
"""


def _generate_rate(path: str, prompt_ids: list[int], tokens: int) -> float:
    """Decode tokens/s of generate's own single-sequence loop in a process like the server's (one
    pinned core): what one request through the server should keep."""
    env = {**os.environ, "TANDEM_NUM_THREADS": "1"}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", _GENERATE, path,
                          ",".join(map(str, prompt_ids)), str(tokens)], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(client: httpx.Client, prompt, tokens: int) -> dict:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    times, usage = [], None
    with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"bench serve: HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if "error" in obj:
                raise RuntimeError(f"bench serve: {obj['error']}")
            if obj.get("choices"):
                times.append(time.perf_counter())
            if obj.get("usage"):
                usage = obj["usage"]
    return dict(start=t0, end=time.perf_counter(), ttft=times[0] - t0, itl=list(np.diff(times)),
                tokens=usage["completion_tokens"], times=times)


def _prompts(name: str, n: int, length: int, vocab: int, seed: int):
    rng = np.random.default_rng(seed)
    if name == "demo":  # distinct texts of about `length` tokens
        words = ["river", "mountain", "blue", "quiet", "engine", "paper", "garden", "signal", "winter", "copper"]
        return [" ".join(rng.choice(words, length)) for _ in range(n)]
    return [[int(t) for t in rng.integers(1, vocab, length)] for _ in range(n)]


def _level(url, prompts, clients: int, rounds: int, tokens: int) -> dict:
    results, errors = [], []
    barrier = threading.Barrier(clients)

    def worker(i):
        with httpx.Client(base_url=url, timeout=600) as c:
            barrier.wait()
            for r in range(rounds):
                try:
                    results.append(_request(c, prompts[(i * rounds + r) % len(prompts)], tokens))
                except Exception as e:  # reported, not hidden
                    errors.append(str(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"bench serve: {len(errors)} requests failed, first: {errors[0]}")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    itl = [x for r in results for x in r["itl"]]
    ttft = [r["ttft"] for r in results]
    # steady decode: the window in which every request of the first round is past its prefill and none
    # has finished; the tokens all of them received in it, per second
    first = results[:clients] if rounds == 1 else sorted(results, key=lambda r: r["start"])[:clients]
    t0, t1 = max(r["times"][0] for r in first), min(r["times"][-1] for r in first)
    n = sum(sum(1 for t in r["times"] if t0 < t <= t1) for r in first)
    decode = n / (t1 - t0) if t1 > t0 and n >= 2 * clients else float("nan")
    return dict(tps=sum(r["tokens"] for r in results) / wall, ttft=ttft, itl=itl, decode=decode)


def _pct(xs, q):
    return float(np.percentile(np.array(xs) * 1e3, q)) if xs else float("nan")


def main(a) -> int:
    levels = [int(c) for c in a.concurrency.split(",") if c]
    rows = []
    for name in [m for m in a.models.split(",") if m]:
        path = _model_path(name, a.cache_dir)
        with open(os.path.join(path, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        prompts = _prompts(name, max(levels) * a.rounds + a.anchor_requests, a.prompt_tokens, vocab, 0)
        ids = prompts[0] if name != "demo" else list(range(100, 100 + a.prompt_tokens))
        gen = _generate_rate(path, ids, a.tokens)
        rows.append((name, "generate_step (no server)", "1", gen, float("nan"), float("nan"), [], []))
        _log(f"{name}: generate's own loop {gen:.1f} tok/s")
        for mode in [m for m in a.modes.split(",") if m]:
            _log(f"{name}, {mode}: starting the server")
            srv = _Serving(path, mode, max(levels))
            try:
                with httpx.Client(base_url=srv.url, timeout=600) as c:
                    _request(c, prompts[0], 4)  # warm-up
                    seq = [_request(c, p, a.tokens) for p in prompts[-a.anchor_requests:]]
                itl = [x for r in seq for x in r["itl"]]
                anchor = statistics.median((len(r["times"]) - 1) / (r["times"][-1] - r["times"][0]) for r in seq)
                e2e = sum(r["tokens"] for r in seq) / sum(r["end"] - r["start"] for r in seq)
                rows.append((name, mode, "sequential (anchor)", anchor, 1.0, e2e, [r["ttft"] for r in seq], itl))
                _log(f"  anchor {anchor:.1f} tok/s")
                for c in levels:
                    r = _level(srv.url, prompts, c, a.rounds, a.tokens)
                    dec = r["decode"]
                    rows.append((name, mode, str(c), dec, dec / anchor, r["tps"], r["ttft"], r["itl"]))
                    _log(f"  {c} clients: decode {dec:.1f} tok/s ({dec / anchor:.2f}x), end to end {r['tps']:.1f}")
            finally:
                srv.close()
    print(f"{a.tokens} tokens per request after {a.prompt_tokens} prompt tokens, {a.rounds} requests per client; "
          f"one process on one core, or two ranks on one core each (TANDEM_NUM_THREADS=1)")
    print("| model | mode | clients | decode tok/s | vs anchor | end-to-end tok/s | TTFT p50 / p99 ms | "
          "ITL p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mode, c, tps, ratio, e2e, ttft, itl in rows:
        if not ttft:  # generate's own loop: a rate, no requests
            print(f"| {name} | {mode} | {c} | {tps:.1f} | | | | |")
            continue
        print(f"| {name} | {mode} | {c} | {tps:.1f} | {ratio:.2f}x | {e2e:.1f} | {_pct(ttft, 50):.0f} / "
              f"{_pct(ttft, 99):.0f} | {_pct(itl, 50):.1f} / {_pct(itl, 99):.1f} |")
    single = {(n, c): t for n, m, c, t, *_ in rows if m == "single"}
    for n, m, c, t, *_ in rows:
        if m == "pipeline" and (n, c) in single and c.isdigit():
            print(f"{n}, {c} clients: two ranks / one process = {t / single[(n, c)]:.2f}x")
    return 0
