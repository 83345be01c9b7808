"""LLM servers for tests, both on 127.0.0.1.

- `llm_server`: the real llama-cpp-python OpenAI-compatible server with the Gemma 3 270M GGUF
  (stages/synth/llm_server.py starts it). Started once per test process: the fixture is
  session-scoped and backed by a process-wide singleton, so every test module that imports it
  shares one server; stopped at exit (and with its parent, should pytest be killed).
- `FakeLlm`: a tiny stdlib HTTP server mimicking /v1/completions and /v1/chat/completions with
  scripted answers (statuses, delays, bodies), counting requests and how many ran at once.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import pytest

from stages.synth.llm_server import DEFAULT_ALIAS, LlamaServer, free_port, start_llama_server

MODEL_NAME = DEFAULT_ALIAS
__all__ = ["Answer", "FakeLlm", "free_port", "llm_server", "shared_llm_server", "MODEL_NAME"]

_server: Optional[LlamaServer] = None
_lock = threading.Lock()


def shared_llm_server() -> LlamaServer:
    """The process's one real llama.cpp server, started on first use."""
    global _server
    with _lock:
        if _server is None or not _server.alive():
            _server = start_llama_server(alias=MODEL_NAME)
        return _server


@pytest.fixture(scope="session")
def llm_server() -> Any:
    # Other modules of this process may still use the shared server: stopped at exit (atexit).
    yield shared_llm_server()


# ------------------------------------------------------------------------------- fake server


@dataclass
class Answer:
    """One scripted reply; `text` builds a valid completion body around it."""

    status: int = 200
    text: Optional[str] = None
    body: Optional[bytes] = None  # raw body, overrides `text`
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def completion_body(text: str, chat: bool = False) -> bytes:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        obj = "text_completion"
    return json.dumps(
        {"id": "cmpl-fake", "object": obj, "created": 0, "model": MODEL_NAME, "choices": [choice],
         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    ).encode()


class FakeLlm:
    """Context manager: `with FakeLlm(answers) as fake: fake.base_url ...`.

    `answers` is a list used in order (the last one repeats) or a callable(request_index,
    request_json) -> Answer.
    """

    def __init__(self, answers: list[Answer] | Callable[[int, dict], Answer]):
        self.answers = answers
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None

    def _answer(self, i: int, req: dict) -> Answer:
        if callable(self.answers):
            return self.answers(i, req)
        return self.answers[min(i, len(self.answers) - 1)]

    def __enter__(self) -> "FakeLlm":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                n = int(self.headers.get("content-length") or 0)
                req = json.loads(self.rfile.read(n) or b"{}")
                with fake._lock:
                    i = len(fake.requests)
                    fake.requests.append(req)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    fake.active += 1
                    fake.max_active = max(fake.max_active, fake.active)
                try:
                    ans = fake._answer(i, req)
                    if ans.delay_s:
                        time.sleep(ans.delay_s)
                    body = ans.body if ans.body is not None else completion_body(
                        ans.text or "", chat=self.path.endswith("/chat/completions"))
                    self.send_response(ans.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    for k, v in ans.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)
                finally:
                    with fake._lock:
                        fake.active -= 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
