"""`tandem serve` on the real demo model, driven by the official openai client: chat and completions,
streaming, usage, stop strings, logprobs, seeds, errors, auth, disconnects, concurrency and 429."""

import concurrent.futures
import json
import os
import subprocess
import sys

import httpx
import openai
import pytest

from mlx_tandem import demo_model
from server_helpers.proc import Server

CHAT = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = ["Name three colours.", "What is 2 + 2?", "Write a haiku about the sea.", "Who wrote Hamlet?"]


@pytest.fixture(scope="module")
def server():
    try:
        demo_model.demo_gguf_path()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    s = Server("--model", "demo", "--max-concurrency", "16", "--default-temperature", "0")
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def chat_text(client, model_id, content, **kw):
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}],
                                       max_tokens=kw.pop("max_tokens", 24), **kw)
    return r.choices[0].message.content


def stream_text(client, model_id, content, max_tokens=24):
    s = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}],
                                       max_tokens=max_tokens, temperature=0, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in s if c.choices)


def test_models_lists_one_stable_id(client, model_id):
    assert model_id and client.models.list().data[0].id == model_id


def test_greedy_chat_equals_tandem_generate(server, client, model_id):
    r = client.chat.completions.create(model=model_id, messages=CHAT, max_tokens=20, temperature=0)
    out = subprocess.run([sys.executable, "-m", "mlx_tandem", "generate", "--model", "demo", "--chat",
                          "--prompt", CHAT[0]["content"], "--max-tokens", "20"],
                         capture_output=True, text=True, timeout=300, check=True)
    assert r.choices[0].message.content == out.stdout[:-1]  # generate ends its text with a newline
    assert "Paris" in r.choices[0].message.content
    u = r.usage
    assert u.prompt_tokens > 10 and 1 <= u.completion_tokens <= 20 and u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_streaming_chunks_add_up_and_carry_usage(client, model_id):
    whole = client.chat.completions.create(model=model_id, messages=CHAT, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=model_id, messages=CHAT, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_plain_and_streamed(client, model_id):
    r = client.completions.create(model=model_id, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and "Paris" in r.choices[0].text
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
    s = client.completions.create(model=model_id, prompt="The capital of France is", max_tokens=8, temperature=0,
                                  stream=True)
    assert "".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text


def test_stop_string_ends_the_text_before_it(client, model_id):
    full = chat_text(client, model_id, PROMPTS[0], temperature=0)
    word = full.split()[2]
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": PROMPTS[0]}],
                                       max_tokens=24, temperature=0, stop=[word, "zzzz"])
    assert r.choices[0].message.content == full[:full.index(word)]
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_are_log_probabilities_of_the_chosen_tokens(client, model_id, stream):
    kw = dict(model=model_id, messages=CHAT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    if stream:
        entries = [e for c in client.chat.completions.create(stream=True, **kw)
                   if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    else:
        entries = client.chat.completions.create(**kw).choices[0].logprobs.content
    assert len(entries) == 6
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        # greedy: the chosen token is the most likely one, and the top list is sorted
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)


def test_completion_logprobs_format(client, model_id):
    r = client.completions.create(model=model_id, prompt="1, 2, 3,", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == r.choices[0].text and all(len(t) == 2 for t in lp.top_logprobs)


def test_seeds_reproduce_sampled_text(client, model_id):
    kw = dict(temperature=1.0, top_p=0.95, max_tokens=24)
    a = chat_text(client, model_id, "Tell me a story.", seed=11, **kw)
    assert a == chat_text(client, model_id, "Tell me a story.", seed=11, **kw)
    others = {chat_text(client, model_id, "Tell me a story.", seed=s, **kw) for s in (12, 13, 14)}
    assert others != {a}  # other seeds give other texts


def test_penalties_and_min_p_change_sampling_but_stay_valid(client, model_id):
    base = chat_text(client, model_id, PROMPTS[0], temperature=0, max_tokens=32)
    pen = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": PROMPTS[0]}],
                                         max_tokens=32, temperature=0, frequency_penalty=2.0, presence_penalty=2.0)
    assert pen.choices[0].message.content != base  # greedy with a penalty avoids repeating tokens
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": PROMPTS[0]}],
                                       max_tokens=8, temperature=1.0, seed=3, extra_body={"min_p": 0.999, "top_k": 5})
    assert r.choices[0].message.content == chat_text(client, model_id, PROMPTS[0], temperature=0, max_tokens=8)


@pytest.mark.parametrize("kw, param", [
    (dict(n=2), "n"),
    (dict(temperature=-1), "temperature"),
    (dict(top_p=1.5), "top_p"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(max_tokens=100000), "max_tokens"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
    (dict(top_logprobs=3), "top_logprobs"),
    (dict(extra_body={"logit_bias": {"1": 5}}), "logit_bias"),
    (dict(extra_body={"top_k": "five"}), "top_k"),
    (dict(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content"),
])
def test_bad_fields_are_400_naming_the_field(client, model_id, kw, param):
    kw = {"messages": CHAT, **kw}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id, **kw)
    assert e.value.status_code == 400 and e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error"


def test_oversized_prompt_and_unknown_model_and_bad_json(server, client, model_id):
    with pytest.raises(openai.BadRequestError, match="context is 8192 tokens"):
        client.completions.create(model=model_id, prompt=list(range(1, 9000)), max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=CHAT)
    with server.http() as h:
        r = h.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        assert h.get("/v1/nothing").status_code == 404 and "error" in h.get("/v1/nothing").json()
        assert h.get("/v1/chat/completions").status_code == 405


def test_client_disconnect_mid_stream_frees_the_slot(server, client, model_id):
    before = server.metric("tandem_requests_total", '{finish="cancelled"}')
    with server.http() as h:
        body = {"model": model_id, "messages": CHAT, "max_tokens": 4000, "temperature": 1.0, "seed": 1, "stream": True}
        with h.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            assert all(next(lines) is not None for _ in range(6))  # a few events arrived; then hang up
    assert server.wait_metric("tandem_requests_total", '{finish="cancelled"}', lambda v: v > before) > before
    assert server.wait_metric("tandem_running_sequences", "", lambda v: v == 0) == 0


def test_sixteen_concurrent_streams_get_their_solo_text(server, client, model_id):
    prompts = [PROMPTS[i % 4] + " " * (i // 4) for i in range(16)]  # 16 different token sequences
    alone = [stream_text(client, model_id, p) for p in prompts]
    before = {b: server.metric("tandem_decode_steps_total", f'{{rows="{b}"}}') for b in range(2, 17)}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda p: stream_text(server.client(), model_id, p), prompts))
    assert together == alone
    batched = sum(server.metric("tandem_decode_steps_total", f'{{rows="{b}"}}') - before[b] for b in range(2, 17))
    assert batched > 0  # the streams did share decode steps


def test_health_and_metrics(server):
    with server.http() as h:
        assert h.get("/health").json()["status"] == "ok"
        text = h.get("/metrics").text
    for name in ("tandem_requests_total", "tandem_generation_tokens_total", "tandem_queue_depth",
                 "tandem_tokens_per_second", "tandem_running_sequences"):
        assert name in text


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, server):
    key = tmp_path_factory.mktemp("key") / "key"
    key.write_text("s3cret-key\n")
    s = Server("--model", "demo", "--api-key-file", str(key), "--max-concurrency", "1", "--max-queue", "1")
    yield s
    s.close()


def test_api_key_is_required_except_for_health(keyed):
    with keyed.http() as h:
        assert h.get("/health").status_code == 200
        for path in ("/v1/models", "/metrics"):
            assert h.get(path).status_code == 401
            assert h.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert h.get(path, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        keyed.client(api_key="wrong").models.list()
    assert keyed.client(api_key="s3cret-key").models.list().data


def test_past_the_queue_limit_is_429_with_retry_after(keyed):
    body = {"messages": CHAT, "max_tokens": 3000, "temperature": 1.0, "stream": True}
    headers = {"Authorization": "Bearer s3cret-key"}
    with keyed.http(headers=headers) as h:
        with h.stream("POST", "/v1/chat/completions", json=body) as a, \
                h.stream("POST", "/v1/chat/completions", json=body) as b:
            assert a.status_code == 200 and b.status_code == 200  # one running, one queued
            r = h.post("/v1/chat/completions", json=body)
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"


def test_non_loopback_without_key_is_refused():
    out = subprocess.run([sys.executable, "-m", "mlx_tandem", "serve", "--model", "demo", "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "--api-key-file" in out.stderr
