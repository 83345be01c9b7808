"""The podcasts source end to end on loopback: feeds and audio from a local HTTP server, real
audio files made with ffmpeg, downloads into a temporary cache."""
from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from catalog.schema import Speaker, Utterance
from stages.sources.fetch import url_hash
from stages.errors import RejectError
from stages.sources.podcasts import PodcastsConfig, PodcastsSource, assign_roles, public_url
from tests.sources.test_fetch import LoopbackServer, Route, closed_port_url, make_audio

FAST = {"allow_private_hosts": True, "retries": 1, "backoff_s": 0.01, "timeout_s": 5, "rate_limit_per_s": 0, "ytdlp_extractors": ["generic"]}


def rss(items: list[dict], title: str = "Loopback Show", rights: str = "") -> bytes:
    body = []
    for it in items:
        guid = f"<guid isPermaLink=\"false\">{it['guid']}</guid>" if it.get("guid") is not None else ""
        body.append(
            f"<item><title>{it['title']}</title>{guid}<pubDate>{it['date']}</pubDate>"
            f"<link>{it.get('link', '')}</link>"
            f"<enclosure url=\"{it['url']}\" length=\"{it.get('length', 0)}\" type=\"{it.get('type', 'audio/mpeg')}\"/></item>"
        )
    rights_el = f"<copyright>{rights}</copyright>" if rights else ""
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>{rights_el}'
            + "".join(body) + "</channel></rss>").encode()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        "mp3": make_audio(str(d / "a.mp3"), seconds=1.0, freq=300),
        "m4a": make_audio(str(d / "b.m4a"), seconds=1.0, freq=500),
        "wav": make_audio(str(d / "c.wav"), seconds=0.5, freq=700),
    }


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


def _files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.join(dirpath, n) for n in names]
    return sorted(out)


def _items(server, media):
    server.routes["/a.mp3"] = Route(media["mp3"], "audio/mpeg")
    server.routes["/b.m4a"] = Route(media["m4a"], "audio/mp4")
    return [
        {"guid": "ep-b", "title": "Second", "date": "Tue, 02 Jan 2024 10:00:00 GMT", "url": server.url("/b.m4a"),
         "type": "audio/x-m4a", "link": server.url("/page/b")},
        {"guid": "ep-a", "title": "First", "date": "Mon, 01 Jan 2024 10:00:00 GMT", "url": server.url("/a.mp3")},
        {"guid": "ep-gone", "title": "Gone", "date": "Sun, 31 Dec 2023 10:00:00 GMT", "url": server.url("/gone.mp3")},
    ]


def _source(tmp_path, feeds, **extra) -> PodcastsSource:
    cfg = PodcastsConfig(feeds=feeds, download_dir=str(tmp_path / "dl"), fetch=FAST, **extra)
    return PodcastsSource(cfg)


def test_discover_downloads_episodes_and_rejects_404(server, media, tmp_path):
    server.routes["/feed.xml"] = Route(rss(_items(server, media), rights="CC BY 4.0"), "application/rss+xml")
    feed = {"url": server.url("/feed.xml"), "lang": "en", "roles": "host_first"}
    d = _source(tmp_path, [feed]).discover()
    assert [t.metadata["title"] for t in d.tasks] == ["Second", "First"]
    assert [(r.stage, r.reason) for r in d.rejects] == [("fetch", "episode_not_found")]
    assert d.rejects[0].item_id == f"podcasts-{url_hash('ep-gone')}"
    b, a = d.tasks
    assert b.source == "podcasts" and b.origin_id == url_hash("ep-b") and b.recording_id == f"podcasts-{b.origin_id}"
    assert b.needs_analysis and b.transcript_path is None and b.lang == "en" and b.license == "CC BY 4.0"
    root = os.path.realpath(tmp_path / "dl")
    feed_dir = os.path.join(root, url_hash(feed["url"]))
    assert b.audio_path == os.path.join(feed_dir, url_hash("ep-b", 32) + ".m4a")
    assert a.audio_path == os.path.join(feed_dir, url_hash("ep-a", 32) + ".mp3")
    with open(a.audio_path, "rb") as f:
        assert f.read() == media["mp3"]
    assert b.metadata == {
        "guid": "ep-b", "feed_url": feed["url"], "feed_title": "Loopback Show", "title": "Second",
        "published": "2024-01-02T10:00:00+00:00", "audio_url": server.url("/b.m4a"),
        "page_url": server.url("/page/b"), "duration_s": None,
        "role_hint": {"policy": "host_first", "host": "host", "guest": "guest"},
    }
    # the downloaded files are real audio
    src = _source(tmp_path, [feed])
    audio = src.read_audio(a)
    assert audio.num_channels == 1 and 0.9 < audio.duration_s < 1.2 and audio.encoding == "mp3"
    # only audio files and their sidecars were written
    assert sorted(os.path.basename(p).split(".", 1)[1] for p in _files(root)) == ["json", "json", "m4a", "mp3"]


def test_second_discover_fetches_nothing_new_then_only_the_new_episode(server, media, tmp_path):
    items = _items(server, media)[:2]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    feed = {"url": server.url("/feed.xml"), "lang": "en"}
    first = _source(tmp_path, [feed]).discover()
    assert server.count("/a.mp3") == 1 and server.count("/b.m4a") == 1
    second = _source(tmp_path, [feed]).discover()
    assert server.count("/feed.xml") == 2
    assert server.count("/a.mp3") == 1 and server.count("/b.m4a") == 1  # nothing downloaded again
    assert [t.fingerprint() for t in second.tasks] == [t.fingerprint() for t in first.tasks]
    assert second.tasks == first.tasks and not second.rejects

    # the feed gains an episode and edits an old title: only the new one is fetched, and the
    # old episode keeps the facts it was first seen with (so it is not reprocessed)
    server.routes["/c.wav"] = Route(media["wav"], "audio/wav")
    items[1] = dict(items[1], title="First (edited)")
    new = {"guid": "ep-c", "title": "Third", "date": "Wed, 03 Jan 2024 10:00:00 GMT", "url": server.url("/c.wav"), "type": "audio/wav"}
    server.routes["/feed.xml"] = Route(rss([new] + items), "application/rss+xml")
    third = _source(tmp_path, [feed]).discover()
    assert server.count("/c.wav") == 1 and server.count("/a.mp3") == 1 and server.count("/b.m4a") == 1
    assert [t.metadata["title"] for t in third.tasks] == ["Third", "Second", "First"]
    assert third.tasks[1:] == first.tasks


def test_changed_or_missing_file_is_fetched_again(server, media, tmp_path):
    server.routes["/feed.xml"] = Route(rss(_items(server, media)[1:2]), "application/rss+xml")
    feed = {"url": server.url("/feed.xml")}
    (task,) = _source(tmp_path, [feed]).discover().tasks
    with open(task.audio_path, "r+b") as f:  # same size, other bytes
        f.write(b"XXXX")
    (again,) = _source(tmp_path, [feed]).discover().tasks
    assert server.count("/a.mp3") == 2
    with open(again.audio_path, "rb") as f:
        assert f.read() == media["mp3"]
    os.remove(again.audio_path)
    _source(tmp_path, [feed]).discover()
    assert server.count("/a.mp3") == 3


def test_feed_errors_are_rejects_and_other_feeds_go_on(server, media, tmp_path):
    server.routes["/good.xml"] = Route(rss(_items(server, media)[1:2]), "application/rss+xml")
    server.routes["/broken.xml"] = Route(b"<rss><channel><title>oops", "application/rss+xml")
    server.routes["/flaky.xml"] = Route(b"", fail_times=100)
    unreachable = closed_port_url("/feed.xml?token=SECRET")
    feeds = [{"url": unreachable}, {"url": server.url("/broken.xml")}, {"url": server.url("/missing.xml")},
             {"url": server.url("/flaky.xml")}, {"url": server.url("/good.xml")}]
    d = _source(tmp_path, feeds).discover()
    assert len(d.tasks) == 1 and d.tasks[0].metadata["guid"] == "ep-a"
    got = [(r.stage, r.item_id, r.reason) for r in d.rejects]
    assert got == [
        ("discover", f"feed-{url_hash(unreachable)}", "feed_unreachable"),
        ("discover", f"feed-{url_hash(server.url('/broken.xml'))}", "feed_malformed"),
        ("discover", f"feed-{url_hash(server.url('/missing.xml'))}", "feed_unreachable"),
        ("discover", f"feed-{url_hash(server.url('/flaky.xml'))}", "feed_unreachable"),
    ]
    assert "SECRET" not in d.rejects[0].detail and "fetch_failed" in d.rejects[0].detail
    assert "episode_not_found" in d.rejects[2].detail and "HTTP 500" in d.rejects[3].detail


def test_max_episodes_and_dates(server, media, tmp_path):
    server.routes["/feed.xml"] = Route(rss(_items(server, media)), "application/rss+xml")
    feed = {"url": server.url("/feed.xml"), "max_episodes": 1}
    d = _source(tmp_path, [feed]).discover()
    assert [t.metadata["guid"] for t in d.tasks] == ["ep-b"] and not d.rejects
    feed = {"url": server.url("/feed.xml"), "since": "2024-01-01", "until": "2024-01-01"}
    d = _source(tmp_path, [feed]).discover()
    assert [t.metadata["guid"] for t in d.tasks] == ["ep-a"]
    assert server.count("/gone.mp3") == 0


def test_hostile_guids_and_names_stay_inside_the_download_dir(server, media, tmp_path):
    server.routes["/evil/..%2F..%2Fpwn.sh"] = Route(media["mp3"], "audio/mpeg")
    server.routes["/a.mp3"] = Route(media["mp3"], "audio/mpeg")
    items = [
        {"guid": "../../etc/passwd", "title": "t1", "date": "Mon, 01 Jan 2024 10:00:00 GMT", "url": server.url("/a.mp3")},
        {"guid": "/etc/passwd", "title": "t2", "date": "Mon, 01 Jan 2024 11:00:00 GMT", "url": server.url("/a.mp3")},
        {"guid": "..", "title": "t3", "date": "Mon, 01 Jan 2024 12:00:00 GMT",
         "url": server.url("/evil/..%2F..%2Fpwn.sh"), "type": "audio/x-shellscript"},
    ]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    d = _source(tmp_path, [{"url": server.url("/feed.xml")}]).discover()
    assert len(d.tasks) == 3 and not d.rejects
    root = os.path.realpath(tmp_path / "dl")
    for t in d.tasks:
        assert os.path.commonpath([root, os.path.realpath(t.audio_path)]) == root
        assert os.path.basename(t.audio_path) == url_hash(t.metadata["guid"], 32) + os.path.splitext(t.audio_path)[1]
    assert {os.path.splitext(t.audio_path)[1] for t in d.tasks} == {".mp3", ".bin"}
    for p in _files(str(tmp_path)):
        assert os.path.commonpath([root, os.path.realpath(p)]) == root
    assert not os.path.exists(tmp_path / "etc") and not os.path.exists(tmp_path / "pwn.sh")


def test_non_http_enclosure_is_a_reject(server, media, tmp_path):
    items = [{"guid": "g1", "title": "local file", "date": "Mon, 01 Jan 2024 10:00:00 GMT", "url": "file:///etc/passwd"}]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    d = _source(tmp_path, [{"url": server.url("/feed.xml")}]).discover()
    assert not d.tasks and [r.reason for r in d.rejects] == ["url_scheme_not_allowed"]


def test_same_guid_in_two_feeds_is_taken_once(server, media, tmp_path):
    items = _items(server, media)[1:2]
    server.routes["/f1.xml"] = Route(rss(items), "application/rss+xml")
    server.routes["/f2.xml"] = Route(rss(items), "application/rss+xml")
    d = _source(tmp_path, [{"url": server.url("/f1.xml")}, {"url": server.url("/f2.xml")}]).discover()
    assert len(d.tasks) == 1 and [r.reason for r in d.rejects] == ["duplicate_episode"]
    assert server.count("/a.mp3") == 1


def test_page_through_ytdlp(server, media, tmp_path):
    server.routes["/show/episode-7.wav"] = Route(media["wav"], "audio/wav")
    page = {"url": server.url("/show/episode-7.wav"), "title": "Episode 7", "lang": "hi", "license": "CC0-1.0",
            "published": "2024-05-01", "roles": {"policy": "host_most", "guest": "caller"}}
    src = PodcastsSource(PodcastsConfig(pages=[page], download_dir=str(tmp_path / "dl"), fetch=FAST))
    (task,) = src.discover().tasks
    assert task.origin_id == url_hash(page["url"]) and task.lang == "hi" and task.license == "CC0-1.0"
    assert task.audio_path == os.path.join(os.path.realpath(tmp_path / "dl"), "pages", url_hash(page["url"], 32) + ".wav")
    assert task.metadata["title"] == "Episode 7" and task.metadata["published"] == "2024-05-01"
    assert task.metadata["role_hint"] == {"policy": "host_most", "host": "host", "guest": "caller"}
    assert src.read_audio(task).sample_rate == 16000
    hits = server.count("/show/episode-7.wav")
    again = src.discover()
    assert again.tasks == [task] and server.count("/show/episode-7.wav") == hits
    sidecar = os.path.join(os.path.dirname(task.audio_path), url_hash(page["url"], 32) + ".json")
    with open(sidecar) as f:
        assert json.load(f)["bytes"] == len(media["wav"])


def test_page_404_is_a_reject(server, tmp_path):
    src = PodcastsSource(PodcastsConfig(pages=[{"url": server.url("/nope.mp3")}], download_dir=str(tmp_path), fetch=FAST))
    d = src.discover()
    assert not d.tasks and [(r.stage, r.reason) for r in d.rejects] == [("fetch", "episode_not_found")]


def test_config_validation():
    with pytest.raises(ValidationError, match="http"):
        PodcastsConfig(feeds=[{"url": "file:///etc/passwd"}])
    with pytest.raises(ValidationError, match="http"):
        PodcastsConfig(pages=[{"url": "ftp://example.org/x"}])
    with pytest.raises(ValidationError, match="at least one"):
        PodcastsConfig()
    with pytest.raises(ValidationError):
        PodcastsConfig(feeds=[{"url": "http://x/f", "typo": 1}])
    with pytest.raises(ValidationError, match="since"):
        PodcastsConfig(feeds=[{"url": "http://x/f", "since": "2024-02-01", "until": "2024-01-01"}])
    with pytest.raises(ValidationError):
        PodcastsConfig(feeds=[{"url": "http://x/f", "roles": "host_loudest"}])
    cfg = PodcastsConfig(feeds=[{"url": "http://x/f", "roles": "host_first"}], lang="te", fetch={"retries": 5})
    assert cfg.feeds[0].roles.policy == "host_first" and cfg.fetch.retries == 5


def test_default_language_and_license(server, media, tmp_path):
    server.routes["/feed.xml"] = Route(rss(_items(server, media)[1:2]), "application/rss+xml")
    (t,) = _source(tmp_path, [{"url": server.url("/feed.xml")}]).discover().tasks
    assert t.lang == "auto" and t.license == "unknown"
    (t,) = _source(tmp_path, [{"url": server.url("/feed.xml")}], lang="te", license="CC BY-SA 4.0").discover().tasks
    assert t.lang == "te" and t.license == "CC BY-SA 4.0"


def test_public_url_drops_credentials():
    assert public_url("https://u:p@cdn.example.org/ep.mp3?token=abc&ep=5&Signature=x") == "https://cdn.example.org/ep.mp3?ep=5"
    assert public_url(None) is None


def _speakers_and_utts():
    spk = [Speaker(f"r-{l}", "r", "podcasts", l) for l in ("SPEAKER_00", "SPEAKER_01", "SPEAKER_02")]
    spans = [("r-SPEAKER_01", 0.0, 2.0), ("r-SPEAKER_00", 2.5, 9.0), ("r-SPEAKER_02", 9.5, 10.0), ("r-SPEAKER_00", 10.0, 15.0)]
    utts = [Utterance(f"u{i}", "r", "podcasts", s, None, a, b, "x", "x", "en") for i, (s, a, b) in enumerate(spans)]
    return spk, utts


def test_assign_roles_policies():
    spk, utts = _speakers_and_utts()
    assign_roles({"policy": "host_first", "host": "host", "guest": "guest"}, spk, utts)
    assert [s.role for s in spk] == ["guest", "host", "guest"]
    spk, utts = _speakers_and_utts()
    assign_roles({"policy": "host_most", "host": "anchor", "guest": "caller"}, spk, utts)
    assert [s.role for s in spk] == ["anchor", "caller", "caller"]
    spk, utts = _speakers_and_utts()
    assign_roles({"policy": "none"}, spk, utts)
    assert [s.role for s in spk] == [None, None, None]


def test_read_audio_of_non_audio_download_is_a_reject(server, tmp_path):
    server.routes["/fake.mp3"] = Route(b"<html>a paywall page, not audio</html>", "audio/mpeg")
    items = [{"guid": "g", "title": "t", "date": "Mon, 01 Jan 2024 10:00:00 GMT", "url": server.url("/fake.mp3")}]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    src = _source(tmp_path, [{"url": server.url("/feed.xml")}])
    (task,) = src.discover().tasks
    with pytest.raises(RejectError) as e:
        src.read_audio(task)
    assert e.value.reason == "audio_decode_failed"


def test_discovery_is_rate_limited_per_host(server, media, tmp_path):
    from stages.sources.fetch import Fetcher
    from tests.sources.test_fetch import FakeClock

    server.routes["/feed.xml"] = Route(rss(_items(server, media)[:2]), "application/rss+xml")
    clock = FakeClock()
    cfg = PodcastsConfig(feeds=[{"url": server.url("/feed.xml")}], download_dir=str(tmp_path / "dl"),
                         fetch=dict(FAST, rate_limit_per_s=2.0, per_host_concurrency=1))
    fetcher = Fetcher(cfg.fetch, clock=clock, sleep=clock.sleep)
    d = PodcastsSource(cfg, fetcher=fetcher).discover()
    assert len(d.tasks) == 2 and fetcher.requests == 3  # feed + two episodes
    assert clock.sleeps == [0.5, 0.5]


def test_source_and_tasks_pickle_for_workers(server, media, tmp_path):
    import pickle

    server.routes["/feed.xml"] = Route(rss(_items(server, media)[1:2]), "application/rss+xml")
    src = _source(tmp_path, [{"url": server.url("/feed.xml")}])
    d = src.discover()
    again = pickle.loads(pickle.dumps(src))
    assert again.read_audio(pickle.loads(pickle.dumps(d.tasks[0]))).num_frames > 0


def test_subclass_name_is_the_tasks_source(server, media, tmp_path):
    class Renamed(PodcastsSource):
        name = "demo-podcasts"

    server.routes["/feed.xml"] = Route(rss(_items(server, media)), "application/rss+xml")
    d = Renamed(PodcastsConfig(feeds=[{"url": server.url("/feed.xml")}], download_dir=str(tmp_path), fetch=FAST)).discover()
    assert {t.source for t in d.tasks} == {"demo-podcasts"}
    assert [(r.source, r.item_id.split("-")[0]) for r in d.rejects] == [("demo-podcasts", "demo")]


def test_page_url_credentials_stay_out_of_metadata(server, media, tmp_path):
    server.routes["/private/ep.wav"] = Route(media["wav"], "audio/wav")
    url = server.url("/private/ep.wav") + "?token=SECRET&n=1"
    src = PodcastsSource(PodcastsConfig(pages=[{"url": url}], download_dir=str(tmp_path), fetch=FAST))
    (task,) = src.discover().tasks
    assert task.origin_id == url_hash(url)
    assert "SECRET" not in json.dumps(task.metadata) and task.metadata["guid"] == server.url("/private/ep.wav") + "?n=1"
    hits = server.count("/private/ep.wav")
    assert src.discover().tasks == [task] and server.count("/private/ep.wav") == hits


# --- bounded, concurrent discovery; no internal addresses --------------------------------------


def _episode(guid: str, url: str, day: int) -> dict:
    return {"guid": guid, "title": guid, "date": f"Mon, {day:02d} Jan 2024 10:00:00 GMT", "url": url}


def test_downloads_from_different_hosts_run_at_once(server, media, tmp_path):
    import threading

    # Each enclosure waits at a barrier for the other: one after another, both would fail (500).
    barrier = threading.Barrier(2, timeout=10)
    server.routes["/wait-a.mp3"] = Route(media["mp3"], "audio/mpeg", barrier=barrier)
    server.routes["/wait-b.mp3"] = Route(media["mp3"], "audio/mpeg", barrier=barrier)
    items = [_episode("a", server.url("/wait-a.mp3"), 2), _episode("b", server.url("/wait-b.mp3", host="localhost"), 1)]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    fetch = dict(FAST, retries=0, concurrency=2, per_host_concurrency=1)
    d = PodcastsSource(PodcastsConfig(feeds=[{"url": server.url("/feed.xml")}], download_dir=str(tmp_path / "dl"),
                                      fetch=fetch)).discover()
    assert [t.metadata["guid"] for t in d.tasks] == ["a", "b"] and not d.rejects


def test_a_trickling_host_fails_alone_and_the_others_go_on(server, media, tmp_path):
    import time

    server.routes["/slow.mp3"] = Route(media["mp3"], "audio/mpeg", trickle=(10, 0.1))  # 100 bytes/s
    for n in range(3):
        server.routes[f"/fast-{n}.mp3"] = Route(media["mp3"], "audio/mpeg")
    items = [_episode("slow", server.url("/slow.mp3"), 9)]
    items += [_episode(f"fast-{n}", server.url(f"/fast-{n}.mp3", host="localhost"), 5 - n) for n in range(3)]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    fetch = dict(FAST, retries=0, concurrency=2, per_host_concurrency=1, min_bytes_per_s=1000, throughput_window_s=1)
    t0 = time.monotonic()
    d = PodcastsSource(PodcastsConfig(feeds=[{"url": server.url("/feed.xml")}], download_dir=str(tmp_path / "dl"),
                                      fetch=fetch)).discover()
    assert time.monotonic() - t0 < 10
    assert [t.metadata["guid"] for t in d.tasks] == ["fast-0", "fast-1", "fast-2"]
    assert [(r.item_id, r.reason) for r in d.rejects] == [(f"podcasts-{url_hash('slow')}", "fetch_failed")]
    assert "too slow" in d.rejects[0].detail and "'slow'" in d.rejects[0].detail


def test_budget_defers_what_is_unfinished_and_the_next_build_fetches_it(server, media, tmp_path):
    import time

    body = media["m4a"]
    server.routes["/long.m4a"] = Route(body, "audio/mp4", trickle=(50, 0.1))  # 500 bytes/s: about 15 s
    server.routes["/a.mp3"] = Route(media["mp3"], "audio/mpeg")
    items = [_episode("long", server.url("/long.m4a"), 3), _episode("quick", server.url("/a.mp3", host="localhost"), 2)]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    cfg = dict(feeds=[{"url": server.url("/feed.xml")}], download_dir=str(tmp_path / "dl"))
    fetch = dict(FAST, retries=0, min_bytes_per_s=0, budget_s=2.5)
    t0 = time.monotonic()
    d = PodcastsSource(PodcastsConfig(**cfg, fetch=fetch)).discover()
    assert time.monotonic() - t0 < 10
    assert [t.metadata["guid"] for t in d.tasks] == ["quick"] and not d.rejects
    assert [(r.stage, r.item_id, r.reason) for r in d.deferred] == [("fetch", f"podcasts-{url_hash('long')}", "download_deferred")]
    parts = [p for p in _files(str(tmp_path / "dl")) if p.endswith(".part")]
    assert len(parts) == 1 and 0 < os.path.getsize(parts[0]) < len(body)
    # the next build, with a healthy server, resumes it
    server.routes["/long.m4a"].trickle = None
    again = PodcastsSource(PodcastsConfig(**cfg, fetch=dict(fetch, budget_s=None))).discover()
    assert [t.metadata["guid"] for t in again.tasks] == ["long", "quick"] and not again.deferred
    assert server.hits[-1].headers.get("Range", "").startswith("bytes=")
    with open(again.tasks[0].audio_path, "rb") as f:
        assert f.read() == body


def test_internal_feeds_enclosures_and_pages_are_refused_by_default(server, media, tmp_path):
    server.routes["/a.mp3"] = Route(media["mp3"], "audio/mpeg")
    server.routes["/feed.xml"] = Route(rss([_episode("a", server.url("/a.mp3"), 1)]), "application/rss+xml")
    strict = {k: v for k, v in FAST.items() if k != "allow_private_hosts"}
    cfg = PodcastsConfig(feeds=[{"url": server.url("/feed.xml")}], pages=[{"url": server.url("/a.mp3")}],
                         download_dir=str(tmp_path / "dl"), fetch=strict)
    d = PodcastsSource(cfg).discover()
    assert not d.tasks and len(server.hits) == 0
    assert [(r.stage, r.reason) for r in d.rejects] == [("discover", "url_host_not_allowed"), ("fetch", "url_host_not_allowed")]


def test_enclosures_pointing_inside_are_refused(server, media, tmp_path):
    # The feed's host is allowed explicitly (an intranet server); its enclosures aim elsewhere inside.
    items = [_episode("meta", "http://169.254.169.254/latest/meta-data/iam/security-credentials/x.mp3", 3),
             _episode("rfc1918", "http://192.168.0.10/ep.mp3", 2),
             _episode("loop6", f"http://[::1]:{server.port}/a.mp3", 1)]
    server.routes["/feed.xml"] = Route(rss(items), "application/rss+xml")
    strict = {k: v for k, v in FAST.items() if k != "allow_private_hosts"}
    cfg = PodcastsConfig(feeds=[{"url": server.url("/feed.xml")}], download_dir=str(tmp_path / "dl"),
                         fetch=dict(strict, allowed_networks=["127.0.0.1/32"]))
    d = PodcastsSource(cfg).discover()
    assert not d.tasks and [r.reason for r in d.rejects] == ["url_host_not_allowed"] * 3
    assert [h.path for h in server.hits] == ["/feed.xml"]
