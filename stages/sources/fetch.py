"""HTTP(S) downloads for feeds and episode audio: retries with backoff, per-host rate limits,
resumable streamed downloads, bounded in time, and yt-dlp for pages that are not direct
enclosures.

Only http and https are ever fetched, and only from public addresses: every request (each
redirect too, followed here rather than by a library) resolves its host once, refuses it when any
address is loopback, private, link-local, multicast, reserved or unspecified (IPv4-mapped, 6to4
and NAT64 forms judged by the IPv4 address inside), and connects to the address it checked, so a
DNS answer that changes between check and connect cannot redirect it (`url_host_not_allowed`).
`allow_private_hosts` (the demo and the tests, which serve on loopback) or `allowed_networks`
(an intranet feed server) lift that rule explicitly; nothing lifts it by default. Proxies from the
environment are not used: a proxy would resolve and connect on its own, unchecked.

A download is bounded overall (`deadline_s`, retries and waits included) and must keep up
`min_bytes_per_s` over every `throughput_window_s`: a watchdog closes the connection of one
that stalls or trickles, so a host sending a byte a second ends as `fetch_failed`, not a hung
build. `fetch_by_host` runs downloads concurrently, a few per host, so a slow host holds only its
own lanes; a discovery budget (`budget_s`) ends what is unfinished as `DownloadDeferred` (the
partial file stays for the next build to resume).

Error details never carry URL credentials or query strings (`redact_url`). Downloaded files are
named by the caller from a hash of the episode's identity; `contained_path` checks every
destination stays under its root.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import ipaddress
import os
import re
import shutil
import socket
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

from pydantic import Field, field_validator

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
_CHUNK = 1 << 20  # file hashing
_READ = 1 << 16  # one socket read at most: read1 returns what has arrived, never waits for a full buffer
_REDIRECTS = {301, 302, 303, 307, 308}
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


class FetchConfig(StageConfig):
    retries: int = Field(3, ge=0, le=20, description="retries after the first attempt")
    backoff_s: float = Field(1.0, ge=0, le=600, description="first retry wait; doubles per retry")
    max_wait_s: float = Field(120.0, ge=0, le=3600, description="cap on one wait (backoff or Retry-After)")
    timeout_s: float = Field(30.0, gt=0, le=600, description="socket timeout: connect and each read")
    deadline_s: float = Field(3 * 3600.0, gt=0, le=48 * 3600.0,
                              description="overall limit on one download or feed, retries and waits included")
    min_bytes_per_s: float = Field(8192.0, ge=0, le=1e9, description="a transfer slower than this over "
                                   "throughput_window_s is cut (and retried); 0: no floor")
    throughput_window_s: float = Field(60.0, ge=1, le=3600, description="window of the throughput floor")
    concurrency: int = Field(4, ge=1, le=64, description="downloads at once")
    per_host_concurrency: int = Field(2, ge=1, le=16, description="downloads at once from one host")
    budget_s: Optional[float] = Field(None, gt=0, le=7 * 86400.0, description="discovery time budget: what is "
                                      "not downloaded by then is deferred to the next build; None: no budget")
    max_redirects: int = Field(10, ge=0, le=30)
    allow_private_hosts: bool = Field(False, description="fetch from loopback and private addresses too "
                                      "(a feed served on this machine: the demo, tests)")
    allowed_networks: list[str] = Field(default_factory=list, description="private networks (CIDR) that may "
                                        "be fetched from, e.g. an intranet feed server's ['10.1.2.0/24']")
    rate_limit_per_s: float = Field(1.0, ge=0, le=1000, description="requests per second per host; 0: no limit")
    rate_burst: int = Field(1, ge=1, le=1000, description="requests a host may get at once before the rate applies")
    user_agent: str = Field("convcorpus/0.1 (podcast corpus builder)", min_length=1, max_length=500)
    max_bytes: int = Field(4 << 30, gt=0, le=64 << 30, description="largest episode download")
    max_feed_bytes: int = Field(50 << 20, gt=0, le=2 << 30, description="largest feed document")
    ytdlp_extractors: Optional[list[str]] = Field(
        None, description="yt-dlp extractor names (regexes) allowed for pages, e.g. ['generic']; default: all"
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"not a network: {net!r} (e.g. 10.1.2.0/24)") from None
        return v

    @field_validator("user_agent")
    @classmethod
    def _header_safe(cls, v: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("user_agent has control characters")
        return v


class DownloadDeferred(Exception):
    """The discovery budget ran out before this download finished; it is fetched (resumed) by
    the next build. Not a reject: nothing is wrong with the episode."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


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
    try:
        parts.port
    except ValueError:
        raise RejectError("url_malformed", f"bad port in {redact_url(url)}") from None
    return str(url).strip()


# Names that reach a cloud instance's metadata service or this machine whatever DNS says.
_BLOCKED_NAMES = {"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                  "instance-data.ec2.internal"}
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPAddress = Any  # ipaddress.IPv4Address | ipaddress.IPv6Address


def address_refusal(ip: _IPAddress) -> Optional[str]:
    """Why an address may not be fetched from (None: it is public). IPv6 forms that carry an
    IPv4 address (mapped, 6to4, NAT64) are judged by that address: they reach it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            why = address_refusal(embedded)
            return f"{why} (inside {ip})" if why else None
        if ip.is_site_local:
            return "a site-local address"
    for flag, why in (("is_unspecified", "the unspecified address"), ("is_loopback", "a loopback address"),
                      ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"),
                      ("is_private", "a private address"), ("is_reserved", "a reserved address")):
        if getattr(ip, flag):
            return why
    if not ip.is_global:
        return "not a public address"
    return None


def host_refusal(host: str) -> Optional[str]:
    """Why a host name is refused before any DNS lookup (None: resolve and check it)."""
    name = host.lower().rstrip(".")
    if name in _BLOCKED_NAMES or name.endswith(_BLOCKED_SUFFIXES):
        return "an internal host name"
    return None


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


@dataclass(frozen=True)
class _Limits:
    """When one download must end: its own deadline, and the discovery budget (monotonic
    times)."""

    url: str
    deadline: float
    stop_at: Optional[float]

    def end(self) -> float:
        return self.deadline if self.stop_at is None else min(self.deadline, self.stop_at)

    def out_of_time(self, detail: str) -> Exception:
        """The error for a download that ran out of time: deferred if the budget ended it."""
        if self.stop_at is not None and self.stop_at <= self.deadline:
            return DownloadDeferred(f"{redact_url(self.url)}: discovery budget spent ({detail})")
        return RejectError("fetch_failed", f"{redact_url(self.url)}: deadline passed ({detail})")


class _Guard:
    """A watchdog on one connection: past the end of its limits, or below the throughput floor
    over a window, it shuts the socket down (a blocked read returns at once) and says why."""

    def __init__(self, cfg: FetchConfig, limits: _Limits):
        self.cfg, self.limits = cfg, limits
        self.bytes = 0
        self.sock: Optional[socket.socket] = None
        self.tripped: Optional[str] = None  # "end" | "slow"
        self.detail = ""
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="fetch-guard")
        self._thread.start()

    def _watch(self) -> None:
        window, floor = self.cfg.throughput_window_s, self.cfg.min_bytes_per_s
        mark_t, mark_b = time.monotonic(), 0
        while True:
            now = time.monotonic()
            wake = self.limits.end() if floor <= 0 else min(self.limits.end(), mark_t + window)
            if self._done.wait(max(0.0, wake - now)):
                return
            now, got = time.monotonic(), self.bytes
            if now >= self.limits.end():
                return self._trip("end", f"{got} bytes in this attempt")
            if floor > 0 and now - mark_t >= window:
                if got - mark_b < floor * (now - mark_t):
                    return self._trip("slow", f"{got - mark_b} bytes in {now - mark_t:.0f} s, under the floor "
                                      f"of {floor:g} bytes/s (fetch.min_bytes_per_s)")
                mark_t, mark_b = now, got

    def _trip(self, why: str, detail: str) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.tripped, self.detail = why, detail
            sock = self.sock
        if sock is not None:
            try:  # the plain socket's shutdown, also under TLS: the reader sees the end at once
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> Optional[str]:
        """Ends the watch; returns why it tripped, if it did."""
        with self._lock:
            self._done.set()
        return self.tripped

    def failure(self, done: int) -> Exception:
        if self.tripped == "end":
            return self.limits.out_of_time(f"{done} bytes so far")
        return _Retry(f"too slow after {done} bytes: {self.detail}")


class _Connection:
    """HTTP(S) to one checked address: the Host header and TLS name stay the URL's host."""

    def __init__(self, parts: Any, address: str, timeout: float, context: ssl.SSLContext, guard: _Guard):
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        if parts.scheme.lower() == "https":
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, port, timeout=timeout, context=context)
        else:
            self.conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)

        def pinned(addr: tuple, timeout: Any = None, source_address: Any = None) -> socket.socket:
            sock = socket.create_connection((address, addr[1]), timeout, source_address)
            guard.sock = sock
            return sock

        self.conn._create_connection = pinned  # type: ignore[attr-defined]
        self.guard = guard

    def request(self, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        self.conn.request("GET", path, headers=headers)
        if self.conn.sock is not None:
            self.guard.sock = self.conn.sock  # the TLS socket, once wrapped
        return self.conn.getresponse()


class _Exchange:
    """An open response, its connection and its watchdog; `read` returns at most _READ bytes,
    whatever has arrived, and counts them for the watchdog."""

    def __init__(self, connection: _Connection, resp: http.client.HTTPResponse, url: str):
        self.connection, self.resp, self.url = connection, resp, url
        self.status = resp.status
        self.headers = resp.headers
        self.guard = connection.guard

    def read(self, done: int) -> bytes:
        """The next block (b"" at the end). `done`: bytes so far, for messages. A watchdog trip
        raises its failure instead of passing for the end of the body."""
        try:
            block = self.resp.read1(_READ)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if self.guard.tripped:
                raise self.guard.failure(done) from None
            raise _Retry(redact_text(f"{type(e).__name__} after {done} bytes: {e}")) from None
        if block:
            self.guard.bytes += len(block)
        elif self.guard.stop():
            raise self.guard.failure(done)
        return block

    def close(self) -> None:
        self.guard.stop()
        try:
            self.resp.close()
        finally:
            self.connection.conn.close()

    def __enter__(self) -> "_Exchange":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


Resolver = Callable[..., Sequence[tuple]]


class Fetcher:
    """HTTP client for feeds and enclosures. `clock` and `sleep` are injectable so tests can
    check waits (backoff, Retry-After, rate limits) without spending them; deadlines and the
    throughput floor run on the real monotonic clock. `resolve` (socket.getaddrinfo's
    signature) is injectable to show that the address checked is the address connected to."""

    def __init__(
        self,
        cfg: FetchConfig = FetchConfig(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        resolve: Resolver = socket.getaddrinfo,
    ):
        self.cfg = cfg
        self.clock, self.sleep, self.resolve = clock, sleep, resolve
        self.buckets: dict[str, TokenBucket] = {}
        self.lock = threading.Lock()
        self.requests = 0  # attempts made, for logs and tests
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in cfg.allowed_networks]
        self.tls = ssl.create_default_context()

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

    def addresses(self, url: str) -> list[str]:
        """The addresses the URL's host may be fetched from: resolved once, every one checked
        (RejectError("url_host_not_allowed") if any is internal). A failed lookup is transient."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not self.cfg.allow_private_hosts:
            why = host_refusal(host)
            if why:
                raise RejectError("url_host_not_allowed", f"{redact_url(url)}: {host} is {why}")
        try:
            infos = self.resolve(host, parts.port or 0, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise _Retry(f"cannot resolve {host}: {e}") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not found:
            raise _Retry(f"cannot resolve {host}: no addresses")
        if self.cfg.allow_private_hosts:
            return found
        for address in found:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                raise RejectError("url_host_not_allowed", f"{redact_url(url)}: unusable address {address!r}") from None
            why = address_refusal(ip)
            if why and not any(ip.version == net.version and ip in net for net in self.allowed):
                raise RejectError("url_host_not_allowed", f"{redact_url(url)}: {host} resolves to {ip}, {why}")
        return found

    def _request(self, url: str, headers: dict[str, str], limits: _Limits) -> _Exchange:
        """One request to one URL (no redirects followed), connected to a checked address."""
        addresses = self.addresses(url)
        self.wait_turn(url)
        with self.lock:
            self.requests += 1
        parts = urlsplit(url)
        path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = {"User-Agent": self.cfg.user_agent, "Accept-Encoding": "identity", **headers}
        last: Optional[Exception] = None
        for address in addresses:
            remaining = limits.end() - time.monotonic()
            if remaining <= 0:
                raise limits.out_of_time("before connecting")
            guard = _Guard(self.cfg, limits)
            connection = _Connection(parts, address, min(self.cfg.timeout_s, remaining), self.tls, guard)
            try:
                resp = connection.request(path, headers)
            except (OSError, http.client.HTTPException, ValueError) as e:
                tripped = guard.stop()
                connection.conn.close()
                if tripped:
                    raise guard.failure(0) from None
                if isinstance(e, ssl.SSLCertVerificationError):
                    raise RejectError("fetch_failed", redact_text(f"{redact_url(url)}: {e}")) from None
                last = e
                continue
            return _Exchange(connection, resp, url)
        assert last is not None
        raise _Retry(redact_text(f"{type(last).__name__}: {last}"))

    def _open(self, url: str, headers: dict[str, str], limits: _Limits) -> _Exchange:
        """A response to GET url, following redirects (each target's scheme and host checked).
        Raises _Retry for transient failures, RejectError for final ones."""
        current = url
        for _ in range(self.cfg.max_redirects + 1):
            check_url(current)
            ex = self._request(current, headers, limits)
            status = ex.status
            if status in _REDIRECTS:
                location = ex.headers.get("Location")
                ex.close()
                if not location:
                    raise RejectError("fetch_failed", f"HTTP {status} without a Location from {redact_url(current)}")
                current = urljoin(current, location.strip())
                continue
            if 200 <= status < 300:
                return ex
            retry_after = _retry_after(ex.headers.get("Retry-After"))
            ex.close()
            if status in (404, 410):
                raise RejectError("episode_not_found", f"HTTP {status} for {redact_url(current)}")
            if status == 416 and "Range" in headers:
                raise _RangeNotSatisfiable()
            if status in _RETRY_STATUS:
                raise _Retry(f"HTTP {status}", retry_after)
            raise RejectError("fetch_failed", f"HTTP {status} for {redact_url(current)}")
        raise RejectError("fetch_failed", f"more than {self.cfg.max_redirects} redirects from {redact_url(url)}")

    def _limits(self, url: str, stop_at: Optional[float]) -> _Limits:
        return _Limits(url, time.monotonic() + self.cfg.deadline_s, stop_at)

    def _with_retries(self, url: str, limits: _Limits, attempt: Callable[[int], Any]) -> Any:
        check_url(url)
        last = ""
        for i in range(self.cfg.retries + 1):
            if time.monotonic() >= limits.end():
                raise limits.out_of_time(f"after {i} attempts; last: {last}" if i else "before the first attempt")
            try:
                return attempt(i)
            except _Retry as r:
                last = r.detail
                if i == self.cfg.retries:
                    break
                wait = min(r.wait_s if r.wait_s is not None else self.cfg.backoff_s * (2 ** i), self.cfg.max_wait_s)
                if time.monotonic() + wait >= limits.end():
                    raise limits.out_of_time(f"after {i + 1} attempts; last: {last}") from None
                self.sleep(wait)
        raise RejectError(
            "fetch_failed", f"{redact_url(url)}: {last} (after {self.cfg.retries + 1} attempts)"
        )

    # -- public

    def get_bytes(self, url: str, max_bytes: Optional[int] = None, stop_at: Optional[float] = None) -> bytes:
        """A whole (small) document, such as a feed; larger than max_bytes (default
        max_feed_bytes) raises RejectError("download_too_large"). `stop_at`: the discovery
        budget's end (time.monotonic()), past which it raises DownloadDeferred."""
        limit = max_bytes or self.cfg.max_feed_bytes
        limits = self._limits(url, stop_at)

        def attempt(_: int) -> bytes:
            with self._open(url, {}, limits) as ex:
                length = _int_header(ex.headers.get("Content-Length"))
                if length is not None and length > limit:
                    raise RejectError("download_too_large", f"{length} bytes > {limit} for {redact_url(url)}")
                chunks: list[bytes] = []
                size = 0
                while size <= limit:
                    block = ex.read(size)
                    if not block:
                        break
                    chunks.append(block)
                    size += len(block)
            data = b"".join(chunks)
            if len(data) > limit:
                raise RejectError("download_too_large", f"more than {limit} bytes from {redact_url(url)}")
            if length is not None and len(data) < length:
                raise _Retry(f"short body: {len(data)} of {length} bytes")
            return data

        return self._with_retries(url, limits, attempt)

    def download(self, url: str, dest_path: str, stop_at: Optional[float] = None) -> DownloadResult:
        """Stream url to dest_path through dest_path + ".part", resuming an existing part with
        an HTTP Range request (a server that answers 200 restarts it). Retries keep the part,
        so a connection lost mid-file resumes where it stopped. Renamed into place at the end.
        Past `stop_at` (the discovery budget) it raises DownloadDeferred and keeps the part."""
        part = dest_path + ".part"
        os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
        state = {"resumed": False}
        limits = self._limits(url, stop_at)

        def attempt(_: int) -> DownloadResult:
            offset = os.path.getsize(part) if os.path.exists(part) else 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                ex = self._open(url, headers, limits)
            except _RangeNotSatisfiable:  # the part is not a prefix we can extend: start over
                os.remove(part)
                raise _Retry("HTTP 416 on resume; restarting", 0.0) from None
            with ex:
                status = ex.status
                length = _int_header(ex.headers.get("Content-Length"))
                if status == 206:
                    if not offset or _range_start(ex.headers.get("Content-Range")) != offset:
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
                        block = ex.read(done)
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
            return self._with_retries(url, limits, attempt)
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


# --- concurrent downloads --------------------------------------------------------------------

T = TypeVar("T")


def host_key(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{(parts.hostname or '').lower()}:{port or ''}"


def fetch_by_host(jobs: Sequence[tuple[str, Callable[[], T]]], cfg: FetchConfig) -> list[tuple[bool, Any]]:
    """Run `(url, job)` pairs concurrently: at most cfg.concurrency at once and
    cfg.per_host_concurrency per host (a slow host holds only its own lanes; each request
    still waits for its host's rate limit). Returns, in the jobs' order, (True, result) or
    (False, the RejectError or DownloadDeferred raised). Any other exception (a full disk, a
    bug) stops starting new jobs and is raised once the running ones end."""
    results: list[tuple[bool, Any]] = [(False, None)] * len(jobs)
    queues: dict[str, deque] = {}
    for i, (url, job) in enumerate(jobs):
        queues.setdefault(host_key(url), deque()).append((i, job))
    # Lanes round-robin over hosts, so the first workers started serve different hosts.
    lanes = [q for n in range(cfg.per_host_concurrency) for q in queues.values() if len(q) > n]
    lock = threading.Lock()
    fatal: list[BaseException] = []

    def lane(queue: deque) -> None:
        while True:
            with lock:
                if fatal or not queue:
                    return
                i, job = queue.popleft()
            try:
                results[i] = (True, job())
            except (RejectError, DownloadDeferred) as e:
                results[i] = (False, e)
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the other lanes stop
                with lock:
                    fatal.append(e)
                return

    if lanes:
        with ThreadPoolExecutor(max_workers=min(cfg.concurrency, len(lanes)), thread_name_prefix="fetch") as pool:
            list(pool.map(lane, lanes))
    if fatal:
        raise fatal[0]
    return results


# --- yt-dlp ----------------------------------------------------------------------------------


class _QuietLog:
    def debug(self, msg: str) -> None:
        pass

    info = warning = error = debug


def download_with_ytdlp(page_url: str, dest_dir: str, cfg: FetchConfig = FetchConfig(), name: Optional[str] = None,
                        fetcher: Optional[Fetcher] = None) -> str:
    """Best audio of one page yt-dlp understands, saved as dest_dir/<name>.<ext> (name defaults
    to a hash of the URL; ext is yt-dlp's, checked against AUDIO_EXTENSIONS). Playlists are
    refused (`ytdlp_playlist`); pages yt-dlp cannot read give `ytdlp_unsupported`.

    The page's host is checked like any fetch (`url_host_not_allowed`); yt-dlp makes its own
    connections after that (media URLs, redirects), which this check does not cover."""
    check_url(page_url)
    try:
        (fetcher or Fetcher(cfg)).addresses(page_url)
    except _Retry as e:
        raise RejectError("fetch_failed", f"{redact_url(page_url)}: {e.detail}") from None
    import yt_dlp  # heavy import: only when a page needs it

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
