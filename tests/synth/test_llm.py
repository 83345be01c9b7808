"""The LLM client against the real llama.cpp server (Gemma 3 270M) and against scripted
loopback servers for failures: down, slow, 5xx, 429, malformed answers, bounded concurrency."""
from __future__ import annotations

import pickle
import threading
import time

import pytest

from stages.synth.llm import LlmClient, LlmConfig
from stages.errors import RejectError
from tests.llm_server import Answer, FakeLlm, free_port, llm_server  # noqa: F401 - fixture

SECRET = "sk-test-key-that-must-never-appear-9f2c"


def _cfg(base_url: str, **kw) -> LlmConfig:
    base = dict(base_url=base_url, model="gemma-3-270m", retries=2, backoff_s=0.05, timeout_s=5.0, max_tokens=16)
    base.update(kw)
    return LlmConfig(**base)


# ------------------------------------------------------------------------- the real server


# llama.cpp reuses the part of a prompt it evaluated last time and evaluates only the rest; how a
# prompt was split changes the logits in the last bits, and so what a sampler draws. The same
# seed gives the same text when the server starts from the same state: each request below
# follows the same other prompt (and a fresh server given the same requests in the same order
# writes the same texts, which is what the demo relies on).
OTHER_PROMPT = "Once upon a time"


def test_real_server_completion_is_seeded(llm_server):  # noqa: F811 - fixture
    client = LlmClient(_cfg(llm_server.base_url, max_tokens=24, temperature=0.9))
    prompt = "USER: What is the capital of France?\nAI:"

    def after_other(seed: int) -> str:
        client.complete(OTHER_PROMPT, seed=0, max_tokens=1)
        return client.complete(prompt, seed=seed, stop=["\n"])

    a, b = after_other(1), after_other(1)
    others = {after_other(s) for s in (2, 3, 4)}
    assert isinstance(a, str) and any(x.strip() for x in others | {a})
    assert a == b  # same seed, same text
    assert len(others | {a}) > 1  # other seeds sample other continuations
    assert "\n" not in a  # the stop sequence ended it


def test_real_server_chat_with_json_schema(llm_server):  # noqa: F811 - fixture
    import json

    client = LlmClient(_cfg(llm_server.base_url, mode="chat", max_tokens=80, structured=True))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    out = client.chat(
        [{"role": "user", "content": "Name a city in India as JSON."}],
        seed=5,
        response_format={"type": "json_object", "schema": schema},
    )
    data = json.loads(out)  # the server constrains the output to the schema
    assert isinstance(data, dict) and isinstance(data["city"], str)


def test_real_server_concurrent_requests(llm_server):  # noqa: F811 - fixture
    client = LlmClient(_cfg(llm_server.base_url, max_tokens=8, max_concurrency=3))
    client.complete("USER: Hello!\nAI:", seed=0, max_tokens=1)  # from here on, every request reuses the prompt
    outs = client.map_concurrent(lambda s: client.complete("USER: Hello!\nAI:", seed=s, stop=["\n"]), [1, 2, 3, 1])
    assert len(outs) == 4 and all(isinstance(o, str) for o in outs)
    assert outs[0] == outs[3]  # same seed, same answer, even with other requests in flight


def test_launcher_errors_are_clear(tmp_path):
    from stages.synth.llm_server import LlmServerError, start_llama_server

    with pytest.raises(LlmServerError, match="no GGUF at"):
        start_llama_server(model_path=str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)  # not a model: the server exits while loading
    t0 = time.monotonic()
    with pytest.raises(LlmServerError, match="exited with code") as e:
        start_llama_server(model_path=str(bad), timeout_s=60)
    assert time.monotonic() - t0 < 60  # noticed the exit, did not wait for the timeout
    assert "server log:" in str(e.value)


# ------------------------------------------------------------------------- failures


def test_server_down_is_llm_unavailable_after_retries():
    port = free_port()  # nothing listens there
    client = LlmClient(_cfg(f"http://127.0.0.1:{port}/v1", retries=2, backoff_s=0.1))
    t0 = time.monotonic()
    with pytest.raises(RejectError) as e:
        client.complete("hi", seed=0)
    assert e.value.reason == "llm_unavailable"
    assert "after 3 tries" in e.value.detail and "connection failed" in e.value.detail
    assert time.monotonic() - t0 >= 0.1 + 0.2  # backed off 0.1 s, then 0.2 s


def test_timeout_is_llm_timeout():
    with FakeLlm([Answer(text="late", delay_s=1.5)]) as fake:
        client = LlmClient(_cfg(fake.base_url, timeout_s=0.3, retries=1, backoff_s=0.01))
        t0 = time.monotonic()
        with pytest.raises(RejectError) as e:
            client.complete("hi", seed=0)
        elapsed = time.monotonic() - t0
    assert e.value.reason == "llm_timeout"
    assert len(fake.requests) == 2  # first try + one retry
    assert elapsed < 1.5  # gave up on time, never waited for the slow answer


def test_500_then_success_is_retried():
    answers = [Answer(status=500, body=b'{"error": "boom"}'), Answer(status=503, body=b"{}"), Answer(text=" fine")]
    with FakeLlm(answers) as fake:
        out = LlmClient(_cfg(fake.base_url, retries=3)).complete("hi", seed=7, stop=["\n"])
    assert out == " fine"
    assert len(fake.requests) == 3
    assert [r["seed"] for r in fake.requests] == [7, 7, 7]  # a retry repeats the same request
    assert fake.requests[0]["stop"] == ["\n"] and fake.requests[0]["model"] == "gemma-3-270m"


def test_429_honours_retry_after():
    answers = [Answer(status=429, body=b'{"error": "slow down"}', headers={"retry-after": "0.5"}), Answer(text="ok")]
    with FakeLlm(answers) as fake:
        t0 = time.monotonic()
        out = LlmClient(_cfg(fake.base_url, backoff_s=0.01)).complete("hi", seed=0)
        elapsed = time.monotonic() - t0
    assert out == "ok" and len(fake.requests) == 2
    assert elapsed >= 0.5


def test_persistent_5xx_is_llm_unavailable():
    with FakeLlm([Answer(status=502, body=b'{"error": "bad gateway"}')]) as fake:
        with pytest.raises(RejectError) as e:
            LlmClient(_cfg(fake.base_url, retries=2)).complete("hi", seed=0)
    assert e.value.reason == "llm_unavailable" and "HTTP 502" in e.value.detail
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"{}", b'{"choices": []}', b'{"choices": [{"index": 0}]}'],
    ids=["malformed", "empty-body", "empty-object", "no-choices", "no-text"],
)
def test_malformed_answers_are_llm_bad_response(body):
    with FakeLlm([Answer(body=body)]) as fake:
        with pytest.raises(RejectError) as e:
            LlmClient(_cfg(fake.base_url, retries=1)).complete("hi", seed=0)
    assert e.value.reason == "llm_bad_response"
    assert len(fake.requests) == 2  # retried once


def test_malformed_then_good_is_retried():
    with FakeLlm([Answer(body=b"{oops"), Answer(text="good")]) as fake:
        assert LlmClient(_cfg(fake.base_url)).complete("hi", seed=0) == "good"
    assert len(fake.requests) == 2


def test_client_error_is_not_retried():
    with FakeLlm([Answer(status=400, body=b'{"error": {"message": "context too long"}}')]) as fake:
        with pytest.raises(RejectError) as e:
            LlmClient(_cfg(fake.base_url, retries=3)).complete("hi", seed=0)
    assert e.value.reason == "llm_request_refused" and "context too long" in e.value.detail
    assert len(fake.requests) == 1


def test_api_key_sent_but_never_in_details(monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    # A hostile server that echoes the Authorization header in its error body.
    def answer(i, req):
        return Answer(status=500, body=('{"error": "%s"}' % fake.headers[i].get("authorization")).encode())

    with FakeLlm(answer) as fake:
        cfg = _cfg(fake.base_url, api_key_env="MY_LLM_KEY", retries=1)
        with pytest.raises(RejectError) as e:
            LlmClient(cfg).complete("hi", seed=0)
    assert fake.headers[0]["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in e.value.detail and SECRET not in str(e.value) and "***" in e.value.detail
    assert SECRET not in cfg.model_dump_json()


def test_no_key_in_environment_sends_placeholder(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeLlm([Answer(text="x")]) as fake:
        LlmClient(_cfg(fake.base_url)).complete("hi", seed=0)
    assert fake.headers[0]["authorization"] == "Bearer none"


def test_concurrency_is_bounded():
    with FakeLlm([Answer(text="x", delay_s=0.2)]) as fake:
        client = LlmClient(_cfg(fake.base_url, max_concurrency=3))
        t0 = time.monotonic()
        outs = client.map_concurrent(lambda i: client.complete(f"p{i}", seed=i), range(9))
        elapsed = time.monotonic() - t0
    assert outs == ["x"] * 9
    assert fake.max_active == 3  # never more than the bound, and the bound was used
    assert elapsed >= 3 * 0.2 - 0.05  # nine requests in three waves


def test_map_concurrent_keeps_order_and_raises():
    client = LlmClient(_cfg("http://127.0.0.1:9/v1", max_concurrency=4))
    lock, running, peak = threading.Lock(), [0], [0]

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02 * (5 - i % 5))
        with lock:
            running[0] -= 1
        return i * i

    assert client.map_concurrent(work, range(10)) == [i * i for i in range(10)]
    assert peak[0] <= 4
    with pytest.raises(ZeroDivisionError):
        client.map_concurrent(lambda i: 1 // (i - 3), range(6))


def test_client_pickles_without_its_connection():
    with FakeLlm([Answer(text="a"), Answer(text="b")]) as fake:
        client = LlmClient(_cfg(fake.base_url))
        assert client.complete("x", seed=0) == "a"
        clone = pickle.loads(pickle.dumps(client))
        assert clone.cfg == client.cfg and clone.complete("x", seed=0) == "b"


def test_several_servers_share_the_requests_and_a_route_sticks_to_one():
    with FakeLlm([Answer(text="a")]) as a, FakeLlm([Answer(text="b")]) as b:
        client = LlmClient(_cfg(a.base_url, base_urls=[a.base_url, b.base_url]))
        assert [client.complete("x", seed=0) for _ in range(4)] == ["a", "b", "a", "b"]  # in turns
        assert {client.complete_full("x", seed=0, route=3).text for _ in range(3)} == {"b"}
        out = client.complete_full("x", seed=0, route=0)
    assert out.text == "a" and (out.prompt_tokens, out.completion_tokens) == (1, 1)  # the usage counts
    assert (len(a.requests), len(b.requests)) == (3, 5)


def test_every_server_down_names_the_one_tried():
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    client = LlmClient(_cfg(dead[0], base_urls=dead, retries=0))
    with pytest.raises(RejectError) as e:
        client.complete_full("hi", seed=0, route=1)
    assert e.value.reason == "llm_unavailable" and dead[1] in e.value.detail


def test_config_rejects_unknown_keys_and_bad_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LlmConfig(base_url="http://x/v1", model="m", api_key="sk-inline")  # keys never live in config
    with pytest.raises(ValidationError):
        LlmConfig(mode="edit")
    with pytest.raises(ValidationError):
        LlmConfig(max_concurrency=0)
