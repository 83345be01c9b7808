"""HTTP(S) downloads for feeds and episode audio: retries with backoff, per-host rate limits,
resumable streamed downloads, and yt-dlp for pages that are not direct enclosures.

Only http and https are ever fetched (redirects included). Error details never carry URL
credentials or query strings (`redact_url`). Downloaded files are named by the caller from a
hash of the episode's identity; `contained_path` checks every destination stays under its root.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urljoin, urlsplit, urlunsplit

from pydantic import Field

from stages.config import StageConfig
from stages.errors import RejectError

ALLOWED_SCHEMES = ("http", "https")
AUDIO_EXTENSIONS = ("mp3", "m4a", "aac", "ogg", "opus", "wav", "flac", "webm", "mp4")
_MIME_EXTENSIONS = {
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3", "audio/x-mpeg": "mp3",
    "audio/mp4": "m4a", "audio/x-m4a": "m4a", "audio/m4a": "m4a", "audio/aac": "aac",
    "audio/x-aac": "aac", "audio/aacp": "aac", "audio/ogg": "ogg", "audio/vorbis": "ogg",
    "audio/opus": "opus", "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav",
    "audio/vnd.wave": "wav", "audio/flac": "flac", "audio/x-flac": "flac", "audio/webm": "webm",
    "video/mp4": "mp4", "video/webm": "webm",
}
_CHUNK = 1 << 20
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


class FetchConfig(StageConfig):
    retries: int = Field(3, ge=0, description="retries after the first attempt")
    backoff_s: float = Field(1.0, ge=0, description="first retry wait; doubles per retry")
    max_wait_s: float = Field(120.0, ge=0, description="cap on one wait (backoff or Retry-After)")
    timeout_s: float = Field(30.0, gt=0, description="socket timeout: connect and each read")
    rate_limit_per_s: float = Field(1.0, ge=0, description="requests per second per host; 0: no limit")
    rate_burst: int = Field(1, ge=1, description="requests a host may get at once before the rate applies")
    user_agent: str = "convcorpus/0.1 (podcast corpus builder)"
    max_bytes: int = Field(4 << 30, gt=0, description="largest episode download")
    max_feed_bytes: int = Field(50 << 20, gt=0, description="largest feed document")
    ytdlp_extractors: Optional[list[str]] = Field(
        None, description="yt-dlp extractor names (regexes) allowed for pages, e.g. ['generic']; default: all"
    )


@dataclass(frozen=True)
class DownloadResult:
    path: str
    bytes: int
    sha256: str
    resumed: bool  # completed a partial file left by an earlier attempt (HTTP 206)


# --- URL and path safety ---------------------------------------------------------------------


def check_url(url: str) -> str:
    """The URL if its scheme is http or https, else RejectError("url_scheme_not_allowed")."""
    parts = urlsplit(str(url).strip())
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        raise RejectError("url_scheme_not_allowed", f"only http(s) URLs are fetched: {redact_url(url)}")
    return str(url).strip()


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment (where tokens live), for messages."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
        query = "<redacted>" if parts.query else ""
        return urlunsplit((parts.scheme, host, parts.path, query, ""))
    except ValueError:
        return "<unparseable url>"


def redact_text(text: str) -> str:
    """Every URL inside a message redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def url_hash(value: str, n: int = 16) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:n]


def audio_extension(url: str, mime: Optional[str] = None) -> str:
    """A whitelisted extension for a download: from the MIME type, else the URL's path,
    else "bin". Feed-provided names never reach the file system otherwise."""
    m = (mime or "").split(";")[0].strip().lower()
    if m in _MIME_EXTENSIONS:
        return _MIME_EXTENSIONS[m]
    ext = os.path.splitext(urlsplit(str(url)).path)[1].lstrip(".").lower()
    if ext == "oga":
        return "ogg"
    return ext if ext in AUDIO_EXTENSIONS else "bin"


def contained_path(root: str, *parts: str) -> str:
    """root/parts as an absolute path, checked (after resolving links) to stay under root."""
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, path]) != base or path == base:
        raise RejectError("unsafe_path", f"{os.path.join(*parts)!r} escapes {root}")
    return path


# --- rate limiting ---------------------------------------------------------------------------


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. `reserve()` takes a token and
    returns how long to wait before using it (tokens may go negative: queued reservations)."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.last = clock()
        self.lock = threading.Lock()

    def reserve(self) -> float:
        with self.lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= 1.0
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# --- HTTP ------------------------------------------------------------------------------------


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only; anything else is url_scheme_not_allowed."""

    def http_error_302(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
        target = headers.get("location") or headers.get("uri")
        if target:
            try:
                check_url(urljoin(req.full_url, target))
            except RejectError:
                fp.close()
                raise
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to a resume request: the partial file cannot be extended."""


class _Retry(Exception):
    """One failed attempt that may succeed later; `wait_s` overrides the backoff."""

    def __init__(self, detail: str, wait_s: Optional[float] = None):
        super().__init__(detail)
        self.detail, self.wait_s = detail, wait_s


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Fetcher:
    """HTTP client for feeds and enclosures. `clock` and `sleep` are injectable so tests can
    check waits (backoff, Retry-After, rate limits) without spending them."""

    def __init__(
        self,
        cfg: FetchConfig = FetchConfig(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cfg = cfg
        self.clock, self.sleep = clock, sleep
        self.opener = urllib.request.build_opener(_SafeRedirects)
        self.buckets: dict[str, TokenBucket] = {}
        self.lock = threading.Lock()
        self.requests = 0  # attempts made, for logs and tests

    # -- plumbing

    def wait_turn(self, url: str) -> None:
        """Wait for the URL's host's rate limit (every request does; yt-dlp callers call it)."""
        if self.cfg.rate_limit_per_s <= 0:
            return
        parts = urlsplit(url)
        host = f"{(parts.hostname or '').lower()}:{parts.port or ''}"
        with self.lock:
            bucket = self.buckets.get(host)
            if bucket is None:
                bucket = self.buckets[host] = TokenBucket(self.cfg.rate_limit_per_s, self.cfg.rate_burst, self.clock)
        wait = bucket.reserve()
        if wait > 0:
            self.sleep(wait)

    def _open(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """One request. Raises _Retry for transient failures, RejectError for final ones."""
        self.wait_turn(url)
        self.requests += 1
        req = urllib.request.Request(url, headers={"User-Agent": self.cfg.user_agent,
                                                   "Accept-Encoding": "identity", **headers})
        try:
            return self.opener.open(req, timeout=self.cfg.timeout_s)
        except urllib.error.HTTPError as e:
            status = e.code
            retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            e.close()
            if status in (404, 410):
                raise RejectError("episode_not_found", f"HTTP {status} for {redact_url(url)}") from None
            if status == 416 and "Range" in headers:
                raise _RangeNotSatisfiable() from None
            if status in _RETRY_STATUS:
                raise _Retry(f"HTTP {status}", retry_after) from None
            raise RejectError("fetch_failed", f"HTTP {status} for {redact_url(url)}") from None
        except urllib.error.URLError as e:
            raise _Retry(redact_text(str(e.reason))) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Retry(redact_text(f"{type(e).__name__}: {e}")) from None

    def _with_retries(self, url: str, attempt: Callable[[int], Any]) -> Any:
        check_url(url)
        last = ""
        for i in range(self.cfg.retries + 1):
            try:
                return attempt(i)
            except _Retry as r:
                last = r.detail
                if i == self.cfg.retries:
                    break
                wait = r.wait_s if r.wait_s is not None else self.cfg.backoff_s * (2 ** i)
                self.sleep(min(wait, self.cfg.max_wait_s))
        raise RejectError(
            "fetch_failed", f"{redact_url(url)}: {last} (after {self.cfg.retries + 1} attempts)"
        )

    # -- public

    def get_bytes(self, url: str, max_bytes: Optional[int] = None) -> bytes:
        """A whole (small) document, such as a feed; larger than max_bytes (default
        max_feed_bytes) raises RejectError("download_too_large")."""
        limit = max_bytes or self.cfg.max_feed_bytes

        def attempt(_: int) -> bytes:
            with self._open(url, {}) as resp:
                length = _int_header(resp.headers.get("Content-Length"))
                if length is not None and length > limit:
                    raise RejectError("download_too_large", f"{length} bytes > {limit} for {redact_url(url)}")
                chunks: list[bytes] = []
                size = 0
                try:
                    while size <= limit:
                        block = resp.read(_CHUNK)
                        if not block:
                            break
                        chunks.append(block)
                        size += len(block)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retry(redact_text(f"{type(e).__name__}: {e}")) from None
            data = b"".join(chunks)
            if len(data) > limit:
                raise RejectError("download_too_large", f"more than {limit} bytes from {redact_url(url)}")
            if length is not None and len(data) < length:
                raise _Retry(f"short body: {len(data)} of {length} bytes")
            return data

        return self._with_retries(url, attempt)

    def download(self, url: str, dest_path: str) -> DownloadResult:
        """Stream url to dest_path through dest_path + ".part", resuming an existing part with
        an HTTP Range request (a server that answers 200 restarts it). Retries keep the part,
        so a connection lost mid-file resumes where it stopped. Renamed into place at the end."""
        part = dest_path + ".part"
        os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
        state = {"resumed": False}

        def attempt(_: int) -> DownloadResult:
            offset = os.path.getsize(part) if os.path.exists(part) else 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                resp = self._open(url, headers)
            except _RangeNotSatisfiable:  # the part is not a prefix we can extend: start over
                os.remove(part)
                raise _Retry("HTTP 416 on resume; restarting", 0.0) from None
            with resp:
                status = resp.status
                length = _int_header(resp.headers.get("Content-Length"))
                if status == 206:
                    if not offset or _range_start(resp.headers.get("Content-Range")) != offset:
                        if os.path.exists(part):
                            os.remove(part)
                        raise _Retry("HTTP 206 with a range not asked for; restarting", 0.0)
                    total = length + offset if length is not None else None
                    mode, digest = "ab", _hash_file(part)
                    state["resumed"] = True
                else:  # 200: the server sends the whole file (it may ignore Range)
                    offset, total, mode, digest = 0, length, "wb", hashlib.sha256()
                    state["resumed"] = False
                if total is not None and total > self.cfg.max_bytes:
                    raise RejectError("download_too_large", f"{total} bytes > {self.cfg.max_bytes} for {redact_url(url)}")
                done = offset
                with open(part, mode) as f:
                    while True:
                        try:
                            block = resp.read(_CHUNK)
                        except (OSError, http.client.HTTPException) as e:
                            raise _Retry(redact_text(f"{type(e).__name__} after {done} bytes: {e}")) from None
                        if not block:
                            break
                        done += len(block)
                        if done > self.cfg.max_bytes:
                            f.close()
                            os.remove(part)
                            raise RejectError("download_too_large", f"more than {self.cfg.max_bytes} bytes from {redact_url(url)}")
                        f.write(block)
                        digest.update(block)
                    f.flush()
                    os.fsync(f.fileno())
            if total is not None and done < total:
                raise _Retry(f"connection closed after {done} of {total} bytes")
            os.replace(part, dest_path)
            return DownloadResult(dest_path, done, digest.hexdigest(), state["resumed"])

        try:
            return self._with_retries(url, attempt)
        except RejectError as e:
            # A transient failure keeps the part for the next run to resume; a final one drops it.
            if e.reason != "fetch_failed" and os.path.exists(part):
                os.remove(part)
            raise


def _int_header(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _range_start(content_range: Optional[str]) -> Optional[int]:
    m = re.match(r"\s*bytes\s+(\d+)-", content_range or "")
    return int(m.group(1)) if m else None


def _hash_file(path: str) -> "hashlib._Hash":
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h


# --- yt-dlp ----------------------------------------------------------------------------------


class _QuietLog:
    def debug(self, msg: str) -> None:
        pass

    info = warning = error = debug


def download_with_ytdlp(page_url: str, dest_dir: str, cfg: FetchConfig = FetchConfig(), name: Optional[str] = None) -> str:
    """Best audio of one page yt-dlp understands, saved as dest_dir/<name>.<ext> (name defaults
    to a hash of the URL; ext is yt-dlp's, checked against AUDIO_EXTENSIONS). Playlists are
    refused (`ytdlp_playlist`); pages yt-dlp cannot read give `ytdlp_unsupported`."""
    import yt_dlp  # heavy import: only when a page needs it

    check_url(page_url)
    os.makedirs(dest_dir, exist_ok=True)
    base = os.path.realpath(dest_dir)
    stem = name or url_hash(page_url, 32)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", stem):
        raise RejectError("unsafe_path", f"bad file stem {stem!r}")
    opts = {
        "format": "bestaudio/best",
        # '%' in the folder would be read as a template field.
        "outtmpl": {"default": os.path.join(base.replace("%", "%%"), stem + ".%(ext)s")},
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "cachedir": False,
        "retries": cfg.retries,
        "fragment_retries": cfg.retries,
        "socket_timeout": cfg.timeout_s,
        "max_filesize": cfg.max_bytes,
        "http_headers": {"User-Agent": cfg.user_agent},
        "restrictfilenames": True,
        "continuedl": True,
        "overwrites": False,
        "logger": _QuietLog(),  # errors come back as exceptions; keep yt-dlp off stderr
    }
    if cfg.ytdlp_extractors is not None:
        opts["allowed_extractors"] = list(cfg.ytdlp_extractors)
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            raw = ydl.extract_info(page_url, download=False, process=False)
            if raw and raw.get("_type") in ("playlist", "multi_video"):
                raise RejectError("ytdlp_playlist", f"{redact_url(page_url)} is a playlist; give one episode's page")
            info = ydl.process_ie_result(raw, download=True)
    except RejectError:
        raise
    except Exception as e:  # yt-dlp's DownloadError and extractor errors
        message = redact_text(str(e))
        if re.search(r"HTTP Error (404|410)", message):
            raise RejectError("episode_not_found", message[:500]) from None
        if "Unsupported URL" in message or "No suitable extractor" in message:
            raise RejectError("ytdlp_unsupported", message[:500]) from None
        raise RejectError("fetch_failed", message[:500]) from None
    downloads = (info or {}).get("requested_downloads") or []
    path = downloads[0].get("filepath") if downloads else None
    if not path or not os.path.isfile(path):
        raise RejectError("fetch_failed", f"yt-dlp wrote no file for {redact_url(page_url)}")
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    safe = contained_path(base, f"{stem}.{ext if ext in AUDIO_EXTENSIONS else 'bin'}")
    if os.path.realpath(path) != safe:
        contained_path(base, os.path.relpath(os.path.realpath(path), base))
        shutil.move(path, safe)
    return safe
