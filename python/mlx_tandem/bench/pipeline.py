"""`tandem bench pipeline`: one process against two ranks on loopback (one core each).

Rows: single process (all layers, one core), two ranks with 1/2/4 concurrent sequences (the scheduler splits
them into two micro-batches, one per rank, each decoding its rows in one forward), and the
linear-scaling ideal (2 x single process: two cores); the link's own cost (a token-sized FORWARD/RESULT
round trip to a rank that does no compute) as microseconds and % of a token; bytes per token on the wire;
prefill time of a long prompt in chunks with and without overlap, and as one piece.
Every configuration runs in fresh processes pinned with os.sched_setaffinity; medians of --repeats runs
with the spread (min-max).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time

import numpy as np


def add_arguments(parser):
    parser.add_argument("--model", default="demo", help="'demo', 'random1b' (a ~1B random FP8 Llama) or a checkpoint dir")
    parser.add_argument("--tokens", type=int, default=24, help="decode tokens per sequence")
    parser.add_argument("--in-flight", default="1,2,4", help="concurrent sequences to measure")
    parser.add_argument("--prompt-len", type=int, default=512, help="prompt length of the prefill rows")
    parser.add_argument("--chunk", type=int, default=64, help="prefill chunk (tokens per frame)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--split", default="auto")
    parser.add_argument("--worker", default=None, help=argparse_hidden())
    parser.add_argument("--port", type=int, default=0, help=argparse_hidden())


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


# ---- models -------------------------------------------------------------------------------------
RANDOM_1B = dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, rope_theta=500000.0, max_position_embeddings=8192)


def random_stage(layer_range):
    """Layers of the ~1B random FP8 Llama (Llama-3.2-1B's shape), seeded per global tensor name so
    every rank and the single process hold the same weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    from ..models import ModelArgs, model_class

    args = ModelArgs.from_config(RANDOM_1B)
    model = model_class("llama")(args, layer_range)
    start = model.layer_range[0]
    updates = []
    for name, p in tree_flatten(model.parameters()):
        gname = name
        if name.startswith("model.layers."):
            i, rest = name[len("model.layers."):].split(".", 1)
            gname = f"model.layers.{int(i) + start}.{rest}"
        key = mx.random.key(int.from_bytes(gname.encode()[-8:], "little") % (1 << 62))
        if p.dtype == mx.uint8:  # E4M3 codes of magnitude <= 1 with random signs
            a = mx.random.randint(0, 0x38, p.shape, key=key).astype(mx.uint8)
            a = a | (mx.random.randint(0, 2, p.shape, key=mx.random.split(key)[0]).astype(mx.uint8) << 7)
        elif name.endswith("weight_scale_inv"):
            a = mx.full(p.shape, 0.03, mx.float32)
        elif "norm" in name:
            a = mx.ones(p.shape, mx.bfloat16)
        else:
            a = (0.02 * mx.random.normal(p.shape, key=key)).astype(mx.bfloat16)
        mx.eval(a)
        updates.append((name, a))
    model.update(tree_unflatten(updates))
    return model.finish_loading()  # as load_model() does


def model_info(spec):
    """(num_layers, vocab, loader(layer_range) -> stage, path or None)."""
    if spec == "random1b":
        return RANDOM_1B["num_hidden_layers"], RANDOM_1B["vocab_size"], random_stage, None
    from ..checkpoint import load_model, read_config
    from ..commands.generate import resolve_model

    path = resolve_model(spec)
    cfg = read_config(path)
    return cfg["num_hidden_layers"], cfg["vocab_size"], lambda r: load_model(path, layer_range=r)[0], path


def choose_split(spec, split):
    L, _, _, path = model_info(spec)
    if split != "auto" or path is None:
        return L // 2 if split == "auto" else int(split)
    from ..checkpoint import Checkpoint, read_config
    from ..pipeline import partition

    cfg = read_config(path)
    ckpt = Checkpoint(path)
    return partition.choose_split(partition.tensor_bytes(ckpt), L, bool(cfg.get("tie_word_embeddings")),
                                  step=partition.step_bytes(ckpt))


# ---- workers (each in its own pinned process) ---------------------------------------------------
def _prompts(vocab, n, length, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, length).tolist() for _ in range(n)]


def _decode_rate(events, n):
    """Tokens/s in the window where all n sequences are decoding: from the moment the last one got its
    first token to the last token."""
    firsts = {}
    for t, i in events:
        firsts.setdefault(i, t)
    start = max(firsts.values())
    count = sum(1 for t, _ in events if t > start)
    return count / (events[-1][0] - start)


def worker_single(a):
    import mlx.core as mx

    from ..generate import generate_step

    L, vocab, loader, _ = model_info(a.model)
    model = loader(None)
    out = {"decode": [], "prefill": []}
    for r in range(a.repeats + 1):  # the first round warms up
        prompt = mx.array(_prompts(vocab, 1, 16, r)[0])
        gen = generate_step(model, prompt, prefill_step=a.chunk)
        events = [(time.perf_counter(), 0) for _ in zip(range(a.tokens), gen)]
        gen.close()
        cache = model.make_cache()
        long = mx.array(_prompts(vocab, 1, a.prompt_len, 100 + r)[0])
        t0 = time.perf_counter()
        for j in range(0, a.prompt_len, a.chunk):  # like generate_step: only the caches until the last chunk
            h = model(long[None, j:j + a.chunk], cache=cache)
            if j + a.chunk < a.prompt_len:
                mx.eval([c.state for c in cache])
        mx.eval(mx.argmax(h[:, -1], -1))
        if r:
            out["decode"].append(_decode_rate(events, 1))
            out["prefill"].append(time.perf_counter() - t0)
    return out


def worker_rank1(a, split):
    from ..pipeline import auth
    from ..pipeline.stage import StageServer

    L, _, loader, _ = model_info(a.model)
    stage = loader((split, L))
    creds = auth.Credentials(os.environ["TANDEM_SECRET"].encode(), f"bench split={split}")
    conn = auth.dial("127.0.0.1", a.port, creds, deadline=600, timeout=600)
    StageServer(stage, conn).serve()
    conn.close()
    return {}


def worker_echo(a):
    """A rank that answers every FORWARD at once: the link and framing cost without compute."""
    from ..pipeline import auth
    from ..pipeline.messages import Forward
    from ..pipeline.wire import MsgType

    creds = auth.Credentials(os.environ["TANDEM_SECRET"].encode(), "bench echo")
    conn = auth.dial("127.0.0.1", a.port, creds, deadline=600, timeout=600)
    while (frame := conn.recv()).msg_type == MsgType.FORWARD:
        req = Forward.parse(frame)
        conn.send(MsgType.RESULT, frame.step, _token_result(req.hidden.shape[0]).tensors())
    conn.close()
    return {}


def _token_result(batch):
    from ..pipeline.messages import Result

    r = Result.empty()
    return Result(np.zeros(batch, np.int32), r.logprobs, r.top_ids, r.top_logprobs, r.logits)


def _token_forward(hidden, offset):
    """A one-token, one-row decode FORWARD (greedy) with a (1, 1, hidden) bf16 activation."""
    import ml_dtypes

    from ..pipeline.messages import Forward, Want
    from ..sampling import SamplingParams

    h = np.zeros((1, 1, hidden), ml_dtypes.bfloat16)
    return Forward(Want.TOKENS, h, [0], [offset], [SamplingParams()], [0])


def _accept(a, description):
    from ..pipeline import auth

    listener = auth.Listener("127.0.0.1", a.port, auth.Credentials(os.environ["TANDEM_SECRET"].encode(), description),
                             timeout=600)
    return listener, listener.accept(600)


def worker_rank0(a, split):
    import mlx.core as mx

    from ..pipeline.pipeline import Pipeline

    L, vocab, loader, _ = model_info(a.model)
    stage = loader((0, split))
    listener, conn = _accept(a, f"bench split={split}")
    pipe = Pipeline(stage, conn, prefill_chunk=a.chunk)
    pipe.generate_batch(_prompts(vocab, 1, 8, 0), 4)  # warm up both ranks
    out = {"decode": {}, "bytes_per_token": {}, "prefill": {}}
    for n in [int(x) for x in a.in_flight.split(",")]:
        rates, per_tok = [], []
        for r in range(a.repeats):
            b0 = conn.bytes_sent + conn.bytes_received
            events = [(time.perf_counter(), i) for i, _ in pipe.stream_batch(_prompts(vocab, n, 16, r), a.tokens)]
            rates.append(_decode_rate(events, n))
            # frames of the prompts (16 tokens each) are counted too; at --tokens 24 they are a small share
            per_tok.append((conn.bytes_sent + conn.bytes_received - b0) / len(events))
        out["decode"][n] = rates
        out["bytes_per_token"][n] = statistics.median(per_tok)
    for name, chunk, window in (("overlapped", a.chunk, None), ("not overlapped", a.chunk, 1),
                                ("one piece", a.prompt_len, None)):
        times = []
        for r in range(a.repeats):
            prompt = _prompts(vocab, 1, a.prompt_len, 100 + r)
            t0 = time.perf_counter()
            pipe.generate_batch(prompt, 1, prefill_step=chunk, max_in_flight=window)
            times.append(time.perf_counter() - t0)
        out["prefill"][name] = times
    pipe.close()
    listener.close()
    return out


def worker_echo0(a):
    from ..pipeline.wire import MsgType

    L, _, _, path = model_info(a.model)
    hidden = RANDOM_1B["hidden_size"] if path is None else json.load(open(os.path.join(path, "config.json")))["hidden_size"]
    listener, conn = _accept(a, "bench echo")
    rtts = []
    for step in range(400):
        t0 = time.perf_counter()
        conn.send(MsgType.FORWARD, step, _token_forward(hidden, step).tensors())
        conn.recv()
        rtts.append(time.perf_counter() - t0)
    conn.send(MsgType.SHUTDOWN, 0)
    conn.close()
    listener.close()
    rtts = rtts[50:]
    return {"rtt_us": [1e6 * float(np.percentile(rtts, q)) for q in (50, 10, 90)]}


def decode_frame_bytes(spec):
    """Exact sizes of one decode step's frames: FORWARD with a (1, 1, H) bf16 activation, RESULT with one id."""
    from ..pipeline.wire import MsgType, encode_frame

    _, _, _, path = model_info(spec)
    hidden = RANDOM_1B["hidden_size"] if path is None else json.load(open(os.path.join(path, "config.json")))["hidden_size"]
    fwd = encode_frame(MsgType.FORWARD, 0, 0, _token_forward(hidden, 1).tensors())
    res = encode_frame(MsgType.RESULT, 0, 0, _token_result(1).tensors())
    return len(fwd), len(res)


def run_worker(a) -> int:
    if a.worker in ("rank0", "rank1"):
        split = choose_split(a.model, a.split)
        res = (worker_rank0 if a.worker == "rank0" else worker_rank1)(a, split)
    else:
        res = {"single": worker_single, "echo": worker_echo, "echo0": worker_echo0}[a.worker](a)
    print(json.dumps(res))
    return 0


# ---- driver -------------------------------------------------------------------------------------
def _spawn(a, role, core, port=0, repeats=None):
    env = {**os.environ, "TANDEM_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "import sys; from mlx_tandem.bench.pipeline import _entry; sys.exit(_entry())",
           "--worker", role, "--port", str(port), "--model", a.model, "--tokens", str(a.tokens),
           "--in-flight", a.in_flight, "--prompt-len", str(a.prompt_len), "--chunk", str(a.chunk),
           "--repeats", str(repeats or a.repeats), "--split", str(a.split)]

    def pinned():
        os.sched_setaffinity(0, {core})

    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=pinned)


def _result(proc):
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench pipeline: a worker failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def _pair(a, role0, role1, cores, repeats=None):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r0 = _spawn(a, role0, cores[0], port, repeats)
    r1 = _spawn(a, role1, cores[1 % len(cores)], port, repeats)
    res = _result(r0)
    _result(r1)
    return res


def med(xs):
    return statistics.median(xs)


def spread(xs, scale=1.0, fmt="{:.2f}"):
    return f"{fmt.format(min(xs) * scale)}-{fmt.format(max(xs) * scale)}"


def main(a) -> int:
    if a.worker:
        return run_worker(a)
    os.environ.setdefault("TANDEM_SECRET", secrets.token_hex(16))
    cores = sorted(os.sched_getaffinity(0))
    log = lambda m: print(m, file=sys.stderr, flush=True)
    if len(cores) < 2:
        log("bench pipeline: fewer than 2 cores available; both ranks share one core")
    split = choose_split(a.model, a.split)
    L = model_info(a.model)[0]
    load0 = os.getloadavg()[0]
    # single process and two ranks alternate, one measured round each, so that both see the same
    # machine load (this machine is shared; a long run of one then the other compares two moments)
    single = {"decode": [], "prefill": []}
    two = {"decode": {}, "bytes_per_token": {}, "prefill": {}}
    for r in range(a.repeats):
        log(f"model {a.model}: {L} layers, split at {split}; round {r + 1}/{a.repeats}: single process")
        one = _result(_spawn(a, "single", cores[0], repeats=1))
        for k in single:
            single[k] += one[k]
        log(f"round {r + 1}/{a.repeats}: two ranks")
        pair = _pair(a, "rank0", "rank1", cores, repeats=1)
        for k in ("decode", "prefill"):
            for n, xs in pair[k].items():
                two[k].setdefault(n, []).extend(xs)
        for n, b in pair["bytes_per_token"].items():
            two["bytes_per_token"].setdefault(n, []).append(b)
    two["bytes_per_token"] = {n: med(b) for n, b in two["bytes_per_token"].items()}
    log("link round trip (echo rank)")
    echo = _pair(a, "echo0", "echo", cores)

    s_rate = med(single["decode"])
    base2 = med(two["decode"]["1"])
    print(f"model {a.model}: {L} layers split at {split}; one core per rank (TANDEM_NUM_THREADS=1); "
          f"{a.tokens} tokens per sequence; medians of {a.repeats}, spread = min-max; "
          f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (on {os.cpu_count()} CPUs)")
    print(f"| {'configuration':34} | {'tokens/s':>9} | {'spread':>13} | {'ms/token':>9} | {'vs 2 ranks x1':>13} | {'bytes/token':>11} |")
    print("|" + "|".join("-" * (w + 2) for w in (34, 9, 13, 9, 13, 11)) + "|")
    print(f"| {'single process (1 core)':34} | {s_rate:9.2f} | {spread(single['decode']):>13} | {1e3 / s_rate:9.1f} | "
          f"{s_rate / base2:13.2f} | {'-':>11} |")
    for n, rates in two["decode"].items():
        r = med(rates)
        print(f"| {f'two ranks, {n} sequences':34} | {r:9.2f} | {spread(rates):>13} | {1e3 / r:9.1f} | "
              f"{r / base2:13.2f} | {two['bytes_per_token'][n]:11.0f} |")
    print(f"| {'linear-scaling ideal (2 x single)':34} | {2 * s_rate:9.2f} | {'':>13} | {500 / s_rate:9.1f} | "
          f"{2 * s_rate / base2:13.2f} | {'':>11} |")
    fwd, res = decode_frame_bytes(a.model)
    print(f"decode frames per token: FORWARD {fwd} B + RESULT {res} B = {fwd + res} B on the wire (plus TCP/IP); "
          f"the bytes/token column is the measured average including the 16-token prompts' frames")
    rtt = echo["rtt_us"]
    print(f"link: token-sized FORWARD + RESULT round trip {rtt[0]:.0f} us (p10 {rtt[1]:.0f}, p90 {rtt[2]:.0f}) = "
          f"{100 * rtt[0] * 1e-6 * base2:.1f}% of a two-rank token ({1e3 / base2:.1f} ms); two ranks x1 vs single "
          f"process: {100 * (1 / base2 - 1 / s_rate) * s_rate:+.1f}% time per token")
    pre = two["prefill"]
    print(f"| {f'prefill {a.prompt_len} tokens':34} | {'tokens/s':>9} | {'seconds':>13} | {'vs not overlapped':>17} |")
    print("|" + "|".join("-" * (w + 2) for w in (34, 9, 13, 17)) + "|")
    base = med(pre["not overlapped"])
    n_chunks = -(-a.prompt_len // a.chunk)
    print(f"ideal overlap of {n_chunks} chunks over two equal stages: {2 * n_chunks / (n_chunks + 1):.2f}x "
          f"(the first chunk fills the pipeline, the last one drains it)")
    rows = [(f"single process, chunks of {a.chunk}", single["prefill"])]
    rows += [(f"two ranks, chunks of {a.chunk}, overlapped", pre["overlapped"]),
             (f"two ranks, chunks of {a.chunk}, not overlapped", pre["not overlapped"]),
             ("two ranks, one piece", pre["one piece"])]
    for name, ts in rows:
        print(f"| {name:34} | {a.prompt_len / med(ts):9.1f} | {med(ts):6.3f} {spread(ts, fmt='{:.3f}'):>6} | "
              f"{base / med(ts):17.2f} |")
    return 0


def _entry() -> int:
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return main(p.parse_args(sys.argv[1:]))
