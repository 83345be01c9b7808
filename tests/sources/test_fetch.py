"""stages/sources/fetch.py against a real HTTP server on loopback (no test reaches the internet).

`LoopbackServer` (also used by the feed and podcast source tests) serves configurable routes:
Range requests, failures before success, Retry-After, connections cut mid-body, redirects.
"""
from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Optional

import pytest

from stages.sources.fetch import (
    FetchConfig,
    Fetcher,
    TokenBucket,
    audio_extension,
    check_url,
    contained_path,
    download_with_ytdlp,
    redact_url,
)
from stages.errors import RejectError


# --- the loopback server ---------------------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    fail_times: int = 0  # answer fail_status this many times first
    fail_status: int = 500
    retry_after: Optional[str] = None  # Retry-After header on failures
    ranges: bool = True  # honour Range requests with 206
    cut_at: Optional[int] = None  # first full-body answer sends only this many bytes, then closes
    delay_s: float = 0.0
    send_length: bool = True
    location: Optional[str] = None  # for 3xx
    trickle: Optional[tuple[int, float]] = None  # body sent as (bytes, pause in seconds) pieces
    barrier: Optional[threading.Barrier] = None  # requests wait here for each other (500 if alone)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    status: int = 0


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with per-path routes and a log of every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection; bodies may be length-less

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                hit = Hit(self.path, {k: v for k, v in self.headers.items()})
                with server.lock:
                    server.hits.append(hit)
                    route = server.routes.get(path)
                    failing = route is not None and route.fail_times > 0
                    if failing:
                        route.fail_times -= 1
                    cut = None
                    if route is not None and route.cut_at is not None and not self.headers.get("Range"):
                        cut, route.cut_at = route.cut_at, None
                if route is None:
                    return self._send(hit, 404, b"not found", "text/plain")
                if route.delay_s:
                    time.sleep(route.delay_s)
                if route.barrier is not None:
                    try:
                        route.barrier.wait()
                    except threading.BrokenBarrierError:
                        return self._send(hit, 500, b"alone at the barrier", "text/plain")
                if failing:
                    extra = {"Retry-After": route.retry_after} if route.retry_after else {}
                    return self._send(hit, route.fail_status, b"try later", "text/plain", extra)
                if route.location:
                    return self._send(hit, route.status, b"", "text/plain", {"Location": route.location})
                if route.status != 200:
                    return self._send(hit, route.status, b"error", "text/plain")
                body = route.body
                rng = self.headers.get("Range")
                if rng and route.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        return self._send(hit, 416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
                    return self._send(hit, 206, body[start:], route.content_type,
                                      {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"},
                                      trickle=route.trickle)
                self._send(hit, 200, body, route.content_type, {}, cut, route.send_length, route.trickle)

            def _send(self, hit, status, body, ctype, extra=None, cut=None, send_length=True, trickle=None):
                hit.status = status
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if send_length:
                    self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                body = body if cut is None else body[:cut]
                try:
                    if trickle is None:
                        self.wfile.write(body)
                    else:
                        self.wfile.flush()
                        step, pause = trickle
                        for i in range(0, len(body), step):
                            self.wfile.write(body[i:i + step])
                            self.wfile.flush()
                            time.sleep(pause)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for h in self.hits if h.path.split("?", 1)[0] == path)


def closed_port_url(path: str = "/feed.xml") -> str:
    """A loopback URL nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def make_audio(path: str, seconds: float = 1.0, freq: int = 440, rate: int = 16000, channels: int = 1) -> bytes:
    """A real audio file (format from the extension) made with ffmpeg's sine source."""
    src = f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", src]
    if channels > 1:
        cmd += ["-ac", str(channels)]
    subprocess.run(cmd + [path], check=True)
    with open(path, "rb") as f:
        return f.read()


class FakeClock:
    """A clock whose sleep advances it: waits are recorded, never spent."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


FAST = FetchConfig(allow_private_hosts=True, retries=3, backoff_s=0.01, timeout_s=5, rate_limit_per_s=0, ytdlp_extractors=["generic"])


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def wav_bytes(tmp_path_factory) -> bytes:
    return make_audio(str(tmp_path_factory.mktemp("audio") / "tone.wav"), seconds=3.0, rate=22050)


# --- tests -----------------------------------------------------------------------------------


def test_get_bytes_and_user_agent(server):
    server.routes["/doc"] = Route(b"<rss/>", "application/rss+xml")
    f = Fetcher(FetchConfig(allow_private_hosts=True, rate_limit_per_s=0, user_agent="convcorpus-test/1"))
    assert f.get_bytes(server.url("/doc")) == b"<rss/>"
    assert server.hits[-1].headers["User-Agent"] == "convcorpus-test/1"


def test_download_streams_to_dest_with_sha(server, wav_bytes, tmp_path):
    server.routes["/a.wav"] = Route(wav_bytes, "audio/wav")
    dest = str(tmp_path / "x" / "a.wav")
    r = Fetcher(FAST).download(server.url("/a.wav"), dest)
    assert r.path == dest and r.bytes == len(wav_bytes) and not r.resumed
    assert r.sha256 == hashlib.sha256(wav_bytes).hexdigest()
    assert _read(dest) == wav_bytes
    assert not os.path.exists(dest + ".part")


def test_resume_partial_download_with_range(server, wav_bytes, tmp_path):
    server.routes["/resume.wav"] = Route(wav_bytes, "audio/wav")
    dest = str(tmp_path / "r.wav")
    with open(dest + ".part", "wb") as f:
        f.write(wav_bytes[:100_000])
    before = server.count("/resume.wav")
    r = Fetcher(FAST).download(server.url("/resume.wav"), dest)
    assert r.resumed is True
    assert _read(dest) == wav_bytes
    assert r.sha256 == hashlib.sha256(wav_bytes).hexdigest() and r.bytes == len(wav_bytes)
    hits = [h for h in server.hits if h.path == "/resume.wav"][before:]
    assert [(h.headers.get("Range"), h.status) for h in hits] == [("bytes=100000-", 206)]


def test_connection_cut_mid_body_resumes_on_retry(server, wav_bytes, tmp_path):
    server.routes["/cut.wav"] = Route(wav_bytes, "audio/wav", cut_at=50_000)
    dest = str(tmp_path / "c.wav")
    r = Fetcher(FAST).download(server.url("/cut.wav"), dest)
    assert r.resumed is True and _read(dest) == wav_bytes
    hits = [h for h in server.hits if h.path == "/cut.wav"]
    assert [h.status for h in hits] == [200, 206]
    assert hits[1].headers["Range"] == "bytes=50000-"


def test_server_ignoring_range_restarts(server, wav_bytes, tmp_path):
    server.routes["/norange.wav"] = Route(wav_bytes, "audio/wav", ranges=False)
    dest = str(tmp_path / "n.wav")
    with open(dest + ".part", "wb") as f:
        f.write(b"garbage that is not the file's prefix")
    r = Fetcher(FAST).download(server.url("/norange.wav"), dest)
    assert r.resumed is False and _read(dest) == wav_bytes


def test_stale_part_longer_than_file_restarts(server, wav_bytes, tmp_path):
    server.routes["/short.wav"] = Route(wav_bytes[:1000], "audio/wav")
    dest = str(tmp_path / "s.wav")
    with open(dest + ".part", "wb") as f:
        f.write(b"x" * 5000)
    r = Fetcher(FAST).download(server.url("/short.wav"), dest)
    assert _read(dest) == wav_bytes[:1000] and r.resumed is False


def test_retries_on_500_then_success(server):
    server.routes["/flaky"] = Route(b"ok", fail_times=2)
    clock = FakeClock()
    f = Fetcher(FetchConfig(allow_private_hosts=True, retries=3, backoff_s=0.5, rate_limit_per_s=0), clock=clock, sleep=clock.sleep)
    assert f.get_bytes(server.url("/flaky")) == b"ok"
    assert server.count("/flaky") == 3
    assert clock.sleeps == [0.5, 1.0]  # exponential backoff


def test_429_honours_retry_after(server):
    server.routes["/busy"] = Route(b"ok", fail_times=1, fail_status=429, retry_after="7")
    clock = FakeClock()
    f = Fetcher(FetchConfig(allow_private_hosts=True, backoff_s=0.01, rate_limit_per_s=0), clock=clock, sleep=clock.sleep)
    assert f.get_bytes(server.url("/busy")) == b"ok"
    assert clock.sleeps == [7.0]


def test_persistent_500_is_fetch_failed(server):
    server.routes["/down"] = Route(b"", fail_times=100)
    clock = FakeClock()
    f = Fetcher(FetchConfig(allow_private_hosts=True, retries=2, backoff_s=0.01, rate_limit_per_s=0), clock=clock, sleep=clock.sleep)
    with pytest.raises(RejectError) as e:
        f.get_bytes(server.url("/down"))
    assert e.value.reason == "fetch_failed" and "HTTP 500" in e.value.detail
    assert server.count("/down") == 3


def test_404_and_410_are_episode_not_found_without_retry(server, tmp_path):
    server.routes["/gone"] = Route(status=410)
    f = Fetcher(FAST)
    for path in ("/missing.mp3", "/gone"):
        with pytest.raises(RejectError) as e:
            f.download(server.url(path), str(tmp_path / "m.mp3"))
        assert e.value.reason == "episode_not_found"
        assert server.count(path) == 1
    assert not os.path.exists(tmp_path / "m.mp3")


def test_unreachable_host_fails_after_retries():
    clock = FakeClock()
    f = Fetcher(FetchConfig(allow_private_hosts=True, retries=2, backoff_s=0.25, rate_limit_per_s=0, timeout_s=2), clock=clock, sleep=clock.sleep)
    with pytest.raises(RejectError) as e:
        f.get_bytes(closed_port_url())
    assert e.value.reason == "fetch_failed" and "refused" in e.value.detail.lower()
    assert f.requests == 3 and clock.sleeps == [0.25, 0.5]


def test_slow_server_times_out_then_fails(server):
    server.routes["/slow"] = Route(b"late", delay_s=1.0)
    f = Fetcher(FetchConfig(allow_private_hosts=True, retries=0, timeout_s=0.2, rate_limit_per_s=0))
    with pytest.raises(RejectError) as e:
        f.get_bytes(server.url("/slow"))
    assert e.value.reason == "fetch_failed" and "timed out" in e.value.detail.lower()


def test_error_details_carry_no_credentials(server):
    server.routes["/private"] = Route(fail_times=100)
    url = f"http://user:hunter2@127.0.0.1:{server.port}/private?token=SECRET123&x=1"
    f = Fetcher(FetchConfig(allow_private_hosts=True, retries=1, backoff_s=0, rate_limit_per_s=0))
    with pytest.raises(RejectError) as e:
        f.get_bytes(url)
    text = f"{e.value.reason} {e.value.detail} {e.value}"
    assert "SECRET123" not in text and "hunter2" not in text and "user" not in text
    assert f"127.0.0.1:{server.port}/private" in text
    assert redact_url("https://a:b@h.org/p?k=v#f") == "https://h.org/p?<redacted>"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.mp3", "javascript:alert(1)",
                                 "data:audio/wav;base64,AAAA", "/etc/passwd", "http:///nohost"])
def test_non_http_schemes_rejected(url, tmp_path):
    f = Fetcher(FAST)
    with pytest.raises(RejectError) as e:
        f.download(url, str(tmp_path / "x.mp3"))
    assert e.value.reason == "url_scheme_not_allowed"
    with pytest.raises(RejectError) as e:
        f.get_bytes(url)
    assert e.value.reason == "url_scheme_not_allowed"
    assert f.requests == 0


def test_redirect_to_file_scheme_refused(server, tmp_path):
    server.routes["/redir"] = Route(status=302, location="file:///etc/passwd")
    server.routes["/redir-ok"] = Route(status=302, location="/doc-target")
    server.routes["/doc-target"] = Route(b"target")
    f = Fetcher(FAST)
    with pytest.raises(RejectError) as e:
        f.get_bytes(server.url("/redir"))
    assert e.value.reason == "url_scheme_not_allowed"
    assert f.get_bytes(server.url("/redir-ok")) == b"target"


def test_max_bytes_enforced_with_and_without_length(server, tmp_path):
    server.routes["/big"] = Route(b"x" * 5000)
    server.routes["/big-nolen"] = Route(b"x" * 5000, send_length=False)
    f = Fetcher(FetchConfig(allow_private_hosts=True, max_bytes=4096, max_feed_bytes=1000, rate_limit_per_s=0, backoff_s=0))
    for path in ("/big", "/big-nolen"):
        with pytest.raises(RejectError) as e:
            f.download(server.url(path), str(tmp_path / "big.mp3"))
        assert e.value.reason == "download_too_large"
        assert not os.path.exists(tmp_path / "big.mp3") and not os.path.exists(tmp_path / "big.mp3.part")
        with pytest.raises(RejectError) as e:
            f.get_bytes(server.url(path))
        assert e.value.reason == "download_too_large"
    # a length-less body under the limit downloads fine (closed connection ends it)
    r = Fetcher(FAST).download(server.url("/big-nolen"), str(tmp_path / "ok.bin"))
    assert r.bytes == 5000


def test_token_bucket_schedule_with_injected_clock():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=1, clock=clock)
    # back-to-back reservations queue at 1/rate spacing
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]
    clock.now += 10  # idle: refills to the burst, no more
    assert bucket.reserve() == 0.0 and bucket.reserve() == 0.5
    burst = TokenBucket(rate=1.0, burst=3, clock=FakeClock())
    assert [burst.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]


def test_fetcher_rate_limits_per_host(server):
    server.routes["/rl"] = Route(b"r")
    clock = FakeClock()
    f = Fetcher(FetchConfig(allow_private_hosts=True, rate_limit_per_s=4.0, rate_burst=1), clock=clock, sleep=clock.sleep)
    start_hits = server.count("/rl")
    for _ in range(5):
        f.get_bytes(server.url("/rl"))
    assert server.count("/rl") - start_hits == 5
    assert clock.sleeps == [0.25] * 4  # the clock only moves by the waits: 4 requests/s exactly
    # another host name has its own bucket: no wait for its first request
    f.get_bytes(server.url("/rl", host="localhost"))
    assert clock.sleeps == [0.25] * 4


def test_audio_extension_whitelist():
    assert audio_extension("http://h/ep.MP3") == "mp3"
    assert audio_extension("http://h/ep", "audio/mpeg") == "mp3"
    assert audio_extension("http://h/ep.sh", "audio/x-m4a; charset=x") == "m4a"
    assert audio_extension("http://h/../../etc/passwd") == "bin"
    assert audio_extension("http://h/evil.php?x=.mp3") == "bin"
    assert audio_extension("http://h/a.oga") == "ogg"


def test_contained_path_refuses_escapes(tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    assert contained_path(root, "ab", "cd.mp3") == os.path.join(os.path.realpath(root), "ab", "cd.mp3")
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(RejectError) as e:
            contained_path(root, bad)
        assert e.value.reason == "unsafe_path"
    os.symlink("/tmp", os.path.join(root, "link"))
    with pytest.raises(RejectError):
        contained_path(root, "link", "x")


def test_check_url_accepts_http_and_https():
    assert check_url(" https://example.org/feed ") == "https://example.org/feed"
    assert check_url("HTTP://example.org/") == "HTTP://example.org/"


def test_ytdlp_downloads_direct_media_on_loopback(server, wav_bytes, tmp_path):
    server.routes["/media/episode.wav"] = Route(wav_bytes, "audio/wav")
    dest = str(tmp_path / "yt")
    path = download_with_ytdlp(server.url("/media/episode.wav"), dest, FAST, name="ep1")
    assert path == os.path.join(os.path.realpath(dest), "ep1.wav")
    assert _read(path) == wav_bytes
    assert sorted(os.listdir(dest)) == ["ep1.wav"]


def test_ytdlp_404_and_scheme(server, tmp_path):
    with pytest.raises(RejectError) as e:
        download_with_ytdlp(server.url("/media/nothing-here.mp3"), str(tmp_path), FAST)
    assert e.value.reason == "episode_not_found"
    with pytest.raises(RejectError) as e:
        download_with_ytdlp("file:///etc/passwd", str(tmp_path), FAST)
    assert e.value.reason == "url_scheme_not_allowed"
    with pytest.raises(RejectError) as e:
        download_with_ytdlp(server.url("/media/x.wav"), str(tmp_path), FAST, name="../../x")
    assert e.value.reason == "unsafe_path"


def test_ytdlp_extractor_allow_list(server, wav_bytes, tmp_path):
    server.routes["/media/allowed.wav"] = Route(wav_bytes, "audio/wav")
    cfg = FAST.model_copy(update={"ytdlp_extractors": ["youtube"]})
    with pytest.raises(RejectError) as e:
        download_with_ytdlp(server.url("/media/allowed.wav"), str(tmp_path), cfg)
    assert e.value.reason == "ytdlp_unsupported"
    assert server.count("/media/allowed.wav") == 0


def test_final_errors_drop_the_part_transient_ones_keep_it(server, tmp_path):
    dest = str(tmp_path / "p.mp3")
    with open(dest + ".part", "wb") as f:
        f.write(b"old partial")
    with pytest.raises(RejectError):
        Fetcher(FAST).download(server.url("/no-such.mp3"), dest)
    assert not os.path.exists(dest + ".part")  # 404: nothing to resume
    server.routes["/down.mp3"] = Route(fail_times=100)
    with open(dest + ".part", "wb") as f:
        f.write(b"old partial")
    with pytest.raises(RejectError) as e:
        Fetcher(FetchConfig(allow_private_hosts=True, retries=1, backoff_s=0, rate_limit_per_s=0)).download(server.url("/down.mp3"), dest)
    assert e.value.reason == "fetch_failed"
    assert _read(dest + ".part") == b"old partial"  # the next run resumes it


def test_large_download_is_streamed_not_held_in_memory(server, tmp_path):
    import tracemalloc

    body = os.urandom(1 << 20) * 48  # 48 MiB
    server.routes["/long-episode.mp3"] = Route(body, "audio/mpeg")
    tracemalloc.start()
    try:
        r = Fetcher(FAST).download(server.url("/long-episode.mp3"), str(tmp_path / "long.mp3"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.bytes == len(body) and r.sha256 == hashlib.sha256(body).hexdigest()
    assert peak < 8 << 20, f"peak Python allocation {peak / 2**20:.1f} MiB"


# --- bounded downloads -----------------------------------------------------------------------


def _bounded(**kw) -> FetchConfig:
    base = dict(allow_private_hosts=True, retries=0, backoff_s=0, timeout_s=5, rate_limit_per_s=0)
    return FetchConfig(**{**base, **kw})


def test_trickling_host_fails_on_the_throughput_floor(server, tmp_path):
    # 20 bytes/s: every socket read returns within the timeout, so only the floor can end it.
    server.routes["/trickle.mp3"] = Route(b"x" * 20_000, "audio/mpeg", trickle=(1, 0.05))
    f = Fetcher(_bounded(min_bytes_per_s=1000, throughput_window_s=1, deadline_s=60))
    t0 = time.monotonic()
    with pytest.raises(RejectError) as e:
        f.download(server.url("/trickle.mp3"), str(tmp_path / "t.mp3"))
    assert time.monotonic() - t0 < 10
    assert e.value.reason == "fetch_failed"
    assert "too slow" in e.value.detail and "fetch.min_bytes_per_s" in e.value.detail
    assert os.path.exists(tmp_path / "t.mp3.part")  # kept: the next run resumes it
    with pytest.raises(RejectError) as e:
        f.get_bytes(server.url("/trickle.mp3"), max_bytes=1 << 20)
    assert e.value.reason == "fetch_failed" and "too slow" in e.value.detail


def test_deadline_bounds_a_download_however_it_trickles(server, tmp_path):
    server.routes["/steady.mp3"] = Route(b"y" * 200_000, "audio/mpeg", trickle=(2000, 0.5))  # 4 kB/s, 50 s
    f = Fetcher(_bounded(min_bytes_per_s=0, deadline_s=1.5, retries=3))
    t0 = time.monotonic()
    with pytest.raises(RejectError) as e:
        f.download(server.url("/steady.mp3"), str(tmp_path / "s.mp3"))
    assert time.monotonic() - t0 < 6
    assert e.value.reason == "fetch_failed" and "deadline passed" in e.value.detail
    # retries and their waits count against the same deadline
    server.routes["/always-503"] = Route(fail_times=10_000, fail_status=503)
    f = Fetcher(_bounded(deadline_s=1.5, retries=10, backoff_s=1.0))
    t0 = time.monotonic()
    with pytest.raises(RejectError) as e:
        f.get_bytes(server.url("/always-503"))
    assert time.monotonic() - t0 < 3 and "deadline passed" in e.value.detail and "HTTP 503" in e.value.detail


def _raw_server(reply):
    """A TCP server on loopback answering every connection with `reply(conn)`; returns (port, stop)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def loop():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=reply, args=(conn, stop), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()

    def close():
        stop.set()
        sock.close()

    return sock.getsockname()[1], close


def test_headers_that_never_end_hit_the_deadline():
    def reply(conn, stop):
        with conn:
            try:
                conn.sendall(b"HTTP/1.0 200 OK\r\nX-Slow: ")
                while not stop.is_set():
                    conn.sendall(b"a")
                    time.sleep(0.05)
            except OSError:
                pass

    port, close = _raw_server(reply)
    try:
        f = Fetcher(_bounded(deadline_s=1.5, min_bytes_per_s=0))
        t0 = time.monotonic()
        with pytest.raises(RejectError) as e:
            f.get_bytes(f"http://127.0.0.1:{port}/feed.xml")
        assert time.monotonic() - t0 < 6 and "deadline passed" in e.value.detail
    finally:
        close()


def test_budget_defers_a_download_and_the_part_resumes_later(server, tmp_path):
    from stages.sources.fetch import DownloadDeferred

    body = os.urandom(60_000)
    server.routes["/budget.mp3"] = Route(body, "audio/mpeg", trickle=(1000, 0.1))  # 10 kB/s
    dest = str(tmp_path / "b.mp3")
    f = Fetcher(_bounded(min_bytes_per_s=0))
    with pytest.raises(DownloadDeferred) as e:
        f.download(server.url("/budget.mp3"), dest, stop_at=time.monotonic() + 1.0)
    assert "budget" in e.value.detail
    kept = os.path.getsize(dest + ".part")
    assert 0 < kept < len(body)
    server.routes["/budget.mp3"].trickle = None
    r = f.download(server.url("/budget.mp3"), dest)
    assert r.resumed and _read(dest) == body
    assert server.hits[-1].headers.get("Range") == f"bytes={kept}-"
    with pytest.raises(DownloadDeferred):  # a budget already spent starts nothing
        f.get_bytes(server.url("/doc"), stop_at=time.monotonic() - 1)


def test_fetch_settings_have_ranges():
    from pydantic import ValidationError

    for bad in ({"deadline_s": 0}, {"min_bytes_per_s": -1}, {"concurrency": 0}, {"concurrency": 1000},
                {"timeout_s": 1e9}, {"retries": 1000}, {"allowed_networks": ["not-a-net"]},
                {"user_agent": "a\r\nX-Injected: 1"}, {"budget_s": 0}):
        with pytest.raises(ValidationError):
            FetchConfig(**bad)


# --- no internal addresses -------------------------------------------------------------------


def _strict(**kw) -> FetchConfig:
    return FetchConfig(**{"retries": 0, "backoff_s": 0, "timeout_s": 2, "rate_limit_per_s": 0, **kw})


def test_private_hosts_are_refused_by_default():
    assert FetchConfig().allow_private_hosts is False and FetchConfig().allowed_networks == []


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "[::1]", "0.0.0.0", "2130706433", "0x7f.1", "127.1",  # this machine, however spelled
    "169.254.169.254", "metadata.google.internal", "metadata", "[fd00:ec2::254]",  # cloud metadata services
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "[fc00::1]", "[fe80::1]",  # private, shared, link-local
    "224.0.0.1", "239.255.255.250", "[ff02::1]", "255.255.255.255", "240.0.0.1", "[::]",  # multicast, reserved
    "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]", "[2002:a9fe:a9fe::1]", "[64:ff9b:1::1]",  # IPv4 inside IPv6: mapped, NAT64, 6to4
    "foo.internal", "x.localhost",
])
def test_internal_addresses_are_refused(server, host, tmp_path):
    before = len(server.hits)
    f = Fetcher(_strict())
    url = f"http://{host}:{server.port}/doc"
    for call in (lambda: f.get_bytes(url), lambda: f.download(url, str(tmp_path / "x.mp3"))):
        with pytest.raises(RejectError) as e:
            call()
        assert e.value.reason == "url_host_not_allowed", e.value.detail
    assert f.requests == 0 and len(server.hits) == before
    with pytest.raises(RejectError) as e:
        download_with_ytdlp(url, str(tmp_path / "yt"), _strict())
    assert e.value.reason == "url_host_not_allowed"
    assert len(server.hits) == before


def test_public_addresses_pass_the_check():
    from ipaddress import ip_address

    from stages.sources.fetch import address_refusal

    for public in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"):
        assert address_refusal(ip_address(public)) is None, public


def test_redirects_to_internal_addresses_are_refused(server):
    server.routes["/doc"] = Route(b"inside")
    server.routes["/to-metadata"] = Route(status=302, location="http://169.254.169.254/latest/meta-data/")
    server.routes["/to-v6-loopback"] = Route(status=301, location=f"http://[::1]:{server.port}/doc")
    server.routes["/to-mapped"] = Route(status=307, location=f"http://[::ffff:10.0.0.1]:{server.port}/doc")
    server.routes["/to-named"] = Route(status=308, location="http://metadata.google.internal/computeMetadata/v1/")
    server.routes["/to-self"] = Route(status=302, location="/doc")
    # The test server counts as an intranet host: 127.0.0.1 only, explicitly.
    f = Fetcher(_strict(allowed_networks=["127.0.0.1/32"]))
    assert f.get_bytes(server.url("/to-self")) == b"inside"
    for path in ("/to-metadata", "/to-v6-loopback", "/to-mapped", "/to-named"):
        before = server.count("/doc")
        with pytest.raises(RejectError) as e:
            f.get_bytes(server.url(path))
        assert e.value.reason == "url_host_not_allowed", (path, e.value.detail)
        assert server.count("/doc") == before


def test_the_checked_address_is_the_one_connected_to(server):
    """A host whose DNS answer changes (rebinding): each request resolves once, and connects to
    what it checked; the next request's answer is checked again."""
    server.routes["/doc"] = Route(b"checked")
    answers = [["127.0.0.1"], ["169.254.169.254"], ["127.0.0.1", "10.0.0.7"]]
    calls = []

    def resolve(host, port, type=0, **_):
        calls.append(host)
        addrs = answers[min(len(calls), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addrs]

    f = Fetcher(_strict(allowed_networks=["127.0.0.1/32"]), resolve=resolve)
    url = f"http://rebind.example:{server.port}/doc"
    assert f.get_bytes(url) == b"checked" and calls == ["rebind.example"]
    assert server.hits[-1].headers["Host"] == f"rebind.example:{server.port}"
    before = server.count("/doc")
    for _ in range(2):  # now internal; then a mix of allowed and internal: refused whole
        with pytest.raises(RejectError) as e:
            f.get_bytes(url)
        assert e.value.reason == "url_host_not_allowed"
    assert server.count("/doc") == before and len(calls) == 3
