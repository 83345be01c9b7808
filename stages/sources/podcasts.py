"""The `podcasts` source: RSS/Atom feeds (audio enclosures over HTTP) and single pages that
yt-dlp understands, downloaded into a cache and handed on as one-microphone recordings
(`needs_analysis`: speakers and words come from VAD, diarization and ASR).

Identity is the episode GUID (a page's identity is its URL): origin_id = sha256(guid)[:16].
Files live at download_dir/<sha256(feed url)[:16]>/<sha256(guid)[:32]>.<ext> (pages under
download_dir/pages/), next to a JSON sidecar recording size, sha256 and the episode's facts as
first seen. A rerun reuses every file whose sidecar matches and fetches only new episodes; the
facts come from the sidecar so an edited title does not reprocess an episode. No name from a
feed or page ever reaches the file system.

Downloads (stages/sources/fetch.py) run a few at once, per host, each bounded in time and
throughput, and only from public addresses unless `fetch.allow_private_hosts` or
`fetch.allowed_networks` say otherwise. With `fetch.budget_s`, what is not downloaded in time is
`Discovery.deferred` (reported, not a reject; the next build resumes it).

Role hints (`roles`), applied after diarization through `assign_roles`:
  none        speakers keep no role (role_policy `both` is the natural pairing)
  host_first  the speaker heard first is the host, everyone else a guest
  host_most   the speaker with the most speech is the host, everyone else a guest
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from datetime import date
from typing import Any, Literal, Optional, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from catalog.schema import Reject, Speaker, Utterance
from stages.audio.decode import DecodedAudio, sha256_file
from stages.audio.load import decode_file
from stages.config import StageConfig
from stages.sources.feeds import Episode, parse_feed, select_episodes
from stages.sources.fetch import (
    DownloadDeferred,
    FetchConfig,
    Fetcher,
    audio_extension,
    check_url,
    contained_path,
    download_with_ytdlp,
    fetch_by_host,
    redact_url,
    url_hash,
)
from stages.sources.base import Discovery, RecordingTask, SourceBase
from stages.errors import RejectError

SOURCE = "podcasts"
DISCOVER_STAGE = "discover"  # feed-level rejects
FETCH_STAGE = "fetch"  # episode download rejects
PAGES_DIR = "pages"
# Feed failures keep these reasons; any other fetch failure of a feed is feed_unreachable.
_FEED_REASONS_KEPT = ("feed_malformed", "url_host_not_allowed", "url_scheme_not_allowed")
log = logging.getLogger(__name__)
# Query parameters that look like credentials are dropped from URLs stored in the catalog.
_SECRET_PARAM = re.compile(r"token|key|secret|auth|sig|signature|pass|session|credential", re.I)


def default_download_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "convcorpus", "podcasts")


def public_url(url: Optional[str]) -> Optional[str]:
    """A URL fit for the catalog: no user info, no credential-like query parameters."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _SECRET_PARAM.search(k)])
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


class RoleHint(StageConfig):
    policy: Literal["none", "host_first", "host_most"] = "none"
    host: str = Field("host", min_length=1, description="role given to the host speaker")
    guest: str = Field("guest", min_length=1, description="role given to every other speaker")


def _role_hint(value: Any) -> Any:
    return {"policy": value} if isinstance(value, str) else value


def _http_url(value: str) -> str:
    try:
        return check_url(value)
    except RejectError as e:
        raise ValueError(e.detail) from None


class FeedConfig(StageConfig):
    url: str = Field(description="RSS or Atom feed (http or https)")
    title: Optional[str] = Field(None, description="display name; the feed's own title otherwise")
    lang: Optional[str] = Field(None, description="language code; default: the source's lang, else 'auto'")
    license: Optional[str] = Field(None, description="default: the source's license, else the feed's rights text")
    max_episodes: Optional[int] = Field(None, ge=1, le=100000, description="newest episodes to take; all if unset")
    since: Optional[date] = None
    until: Optional[date] = None
    roles: RoleHint = RoleHint()
    speakers: Optional[int] = Field(None, ge=1, le=32, description="known speaker count of every episode "
                                    "(a diarization hint; 1 keeps monologues)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, v: Any) -> Any:
        return _role_hint(v)

    @model_validator(mode="after")
    def _range(self) -> "FeedConfig":
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")
        return self


class PageConfig(StageConfig):
    """One episode on a page yt-dlp understands (not a playlist)."""

    url: str
    title: Optional[str] = None
    published: Optional[date] = None
    lang: Optional[str] = None
    license: Optional[str] = None
    roles: RoleHint = RoleHint()
    speakers: Optional[int] = Field(None, ge=1, le=32, description="known speaker count of every episode "
                                    "(a diarization hint; 1 keeps monologues)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, v: Any) -> Any:
        return _role_hint(v)


class PodcastsConfig(StageConfig):
    feeds: list[FeedConfig] = Field(default_factory=list)
    pages: list[PageConfig] = Field(default_factory=list)
    download_dir: Optional[str] = Field(None, description="episode cache (default ~/.cache/convcorpus/podcasts)")
    lang: Optional[str] = Field(None, description="default language of feeds that set none")
    license: Optional[str] = Field(None, description="default license of feeds that set none")
    fetch: FetchConfig = FetchConfig()

    @model_validator(mode="after")
    def _something(self) -> "PodcastsConfig":
        if not self.feeds and not self.pages:
            raise ValueError("podcasts needs at least one entry in feeds or pages")
        return self


def assign_roles(hint: Optional[dict[str, Any]], speakers: Sequence[Speaker], utterances: Sequence[Utterance]) -> None:
    """Set Speaker.role from a role hint (see the module doc); `none` changes nothing."""
    if not hint or hint.get("policy", "none") == "none" or not speakers:
        return
    talk: dict[str, float] = {s.speaker_id: 0.0 for s in speakers}
    first: dict[str, float] = {}
    for u in utterances:
        talk[u.speaker_id] = talk.get(u.speaker_id, 0.0) + max(0.0, u.end_s - u.start_s)
        first[u.speaker_id] = min(first.get(u.speaker_id, u.start_s), u.start_s)
    if not first:
        return
    if hint["policy"] == "host_first":
        host = min(first, key=lambda sid: (first[sid], -talk[sid], sid))
    else:  # host_most
        host = max(talk, key=lambda sid: (talk[sid], -first.get(sid, float("inf")), sid))
    for s in speakers:
        s.role = hint.get("host", "host") if s.speaker_id == host else hint.get("guest", "guest")


class _Job:
    """One episode's fetch for `fetch_by_host`, with what its reject or deferral is called."""

    def __init__(self, run: Any, item_id: str, label: str):
        self.run, self.item_id, self.label = run, item_id, label

    def __call__(self) -> Any:
        return self.run()


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, sort_keys=True, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


class PodcastsSource(SourceBase):
    name = SOURCE

    def __init__(self, config: PodcastsConfig, fetcher: Optional[Fetcher] = None):
        self.config = config
        self.root = os.path.abspath(os.path.expanduser(config.download_dir or default_download_dir()))
        # Made per discovery, not kept: the source travels to Ray workers and a Fetcher holds locks.
        self._fetcher = fetcher

    # -- discovery

    def discover(self) -> Discovery:
        """Feeds first, then every episode and page, each phase fetched concurrently
        (fetch.concurrency, fetch.per_host_concurrency); results keep the configured order.
        Past fetch.budget_s what is not fetched is `deferred` (reported, fetched next time)."""
        os.makedirs(self.root, exist_ok=True)
        cfg = self.config.fetch
        fetcher = self._fetcher or Fetcher(cfg)
        stop_at = time.monotonic() + cfg.budget_s if cfg.budget_s else None
        bodies = fetch_by_host([(f.url, functools.partial(fetcher.get_bytes, f.url, stop_at=stop_at))
                                for f in self.config.feeds], cfg)
        slots: list[Any] = []  # in discovery order: a Reject, or the index of a job below
        jobs: list[tuple[str, Any]] = []
        makers: list[Any] = []  # per job: its result -> RecordingTask
        deferred: list[Reject] = []
        seen: set[str] = set()
        for feed, (ok, body) in zip(self.config.feeds, bodies):
            self._plan_feed(fetcher, feed, ok, body, stop_at, slots, jobs, makers, deferred, seen)
        for page in self.config.pages:
            self._plan_page(fetcher, page, stop_at, slots, jobs, makers, seen)
        results = fetch_by_host(jobs, cfg)
        tasks: list[RecordingTask] = []
        rejects: list[Reject] = []
        for slot in slots:
            if isinstance(slot, Reject):
                rejects.append(slot)
                continue
            ok, value = results[slot]
            item_id, label = jobs[slot][1].item_id, jobs[slot][1].label
            if ok:
                tasks.append(makers[slot](value))
            elif isinstance(value, DownloadDeferred):
                deferred.append(Reject(self.name, FETCH_STAGE, item_id, "download_deferred", f"{label}{value.detail}"[:2000]))
            else:
                rejects.append(Reject(self.name, FETCH_STAGE, item_id, value.reason, f"{label}{value.detail}"[:2000]))
        if deferred:
            log.warning("%s: discovery budget of %ss spent: %d download(s) deferred to the next build",
                        self.name, cfg.budget_s, len(deferred))
        return Discovery(tasks=tasks, rejects=rejects, deferred=deferred)

    def _plan_feed(self, fetcher: Fetcher, feed: FeedConfig, ok: bool, body: Any, stop_at: Optional[float],
                   slots: list, jobs: list, makers: list, deferred: list, seen: set[str]) -> None:
        feed_id = url_hash(feed.url)
        if ok:
            try:
                episodes = parse_feed(body, feed.url)
            except RejectError as e:
                ok, body = False, e
        if not ok:
            detail = f"{redact_url(feed.url)}: {getattr(body, 'reason', 'deferred')}: {body.detail}"[:2000]
            if isinstance(body, DownloadDeferred):
                deferred.append(Reject(self.name, DISCOVER_STAGE, f"feed-{feed_id}", "download_deferred", detail))
                return
            reason = body.reason if body.reason in _FEED_REASONS_KEPT else "feed_unreachable"
            slots.append(Reject(self.name, DISCOVER_STAGE, f"feed-{feed_id}", reason, detail))
            return
        lang = feed.lang or self.config.lang or "auto"
        for ep in select_episodes(episodes, feed.max_episodes, feed.since, feed.until):
            origin_id = url_hash(ep.guid)
            if self._duplicate(origin_id, ep.guid, seen, slots):
                continue
            facts = {
                "guid": ep.guid,
                "feed_url": public_url(ep.feed_url),
                "feed_title": feed.title or ep.feed_title or None,
                "title": ep.title,
                "published": ep.published,
                "audio_url": public_url(ep.audio_url),
                "page_url": public_url(ep.page_url),
                "duration_s": ep.duration_s,
            }
            license = feed.license or self.config.license or ep.feed_rights or "unknown"

            def download(dest_dir: str, stem: str, ep: Episode = ep) -> str:
                return self._download(fetcher, ep, dest_dir, stem, stop_at)

            def make(result: tuple[str, dict], origin_id: str = origin_id, license: str = license) -> RecordingTask:
                return self._task(origin_id, result[0], lang, license, result[1], feed.roles, feed.speakers)

            slots.append(len(jobs))
            jobs.append((ep.audio_url, _Job(functools.partial(self._fetch, feed_id, ep.guid, facts, download),
                                            f"{self.name}-{origin_id}", f"{ep.title!r}: ")))
            makers.append(make)

    def _plan_page(self, fetcher: Fetcher, page: PageConfig, stop_at: Optional[float],
                   slots: list, jobs: list, makers: list, seen: set[str]) -> None:
        guid = page.url
        origin_id = url_hash(guid)
        if self._duplicate(origin_id, guid, seen, slots):
            return
        facts = {
            "guid": public_url(guid),  # the identity hashes the URL as given; the catalog shows it without credentials
            "feed_url": None,
            "feed_title": None,
            "title": page.title or "",
            "published": page.published.isoformat() if page.published else None,
            "audio_url": None,
            "page_url": public_url(page.url),
            "duration_s": None,
        }

        def fetch(dest_dir: str, stem: str) -> str:
            # yt-dlp cannot be stopped midway: past the budget it is not started.
            if stop_at is not None and time.monotonic() >= stop_at:
                raise DownloadDeferred(f"{redact_url(page.url)}: discovery budget spent before this page")
            fetcher.wait_turn(page.url)
            return download_with_ytdlp(page.url, dest_dir, self.config.fetch, name=stem, fetcher=fetcher)

        def make(result: tuple[str, dict]) -> RecordingTask:
            lang = page.lang or self.config.lang or "auto"
            license = page.license or self.config.license or "unknown"
            return self._task(origin_id, result[0], lang, license, result[1], page.roles, page.speakers)

        slots.append(len(jobs))
        jobs.append((page.url, _Job(functools.partial(self._fetch, PAGES_DIR, guid, facts, fetch), f"{self.name}-{origin_id}", "")))
        makers.append(make)

    def _duplicate(self, origin_id: str, guid: str, seen: set[str], rejects: list) -> bool:
        if origin_id in seen:
            rejects.append(Reject(self.name, DISCOVER_STAGE, f"{self.name}-{origin_id}", "duplicate_episode",
                                  f"GUID {guid!r} already taken from an earlier feed or page"[:2000]))
            return True
        seen.add(origin_id)
        return False

    def _task(self, origin_id: str, path: str, lang: str, license: str, facts: dict, roles: RoleHint,
              speakers: Optional[int] = None) -> RecordingTask:
        metadata = dict(facts)
        metadata["role_hint"] = roles.model_dump()
        if speakers is not None:
            metadata["speakers"] = speakers
        return RecordingTask(
            source=self.name,
            origin_id=origin_id,
            audio_path=path,
            transcript_path=None,
            lang=lang,
            license=license,
            metadata=metadata,
            needs_analysis=True,
        )

    # -- downloads

    def _download(self, fetcher: Fetcher, ep: Episode, dest_dir: str, stem: str, stop_at: Optional[float] = None) -> str:
        ext = audio_extension(ep.audio_url, ep.audio_type)
        dest = contained_path(dest_dir, f"{stem}.{ext}")
        return fetcher.download(ep.audio_url, dest, stop_at=stop_at).path

    def _fetch(self, group: str, guid: str, facts: dict[str, Any], fetch: Any) -> tuple[str, dict[str, Any]]:
        """The episode's file: reused when its sidecar matches, else fetched by
        `fetch(dest_dir, stem) -> path`. Returns the path and the episode facts to record."""
        stem = url_hash(guid, 32)
        dest_dir = contained_path(self.root, group)
        os.makedirs(dest_dir, exist_ok=True)
        sidecar = contained_path(dest_dir, f"{stem}.json")
        cached = self._reusable(dest_dir, sidecar, guid)
        if cached is not None:
            return cached
        path = fetch(dest_dir, stem)
        path = contained_path(dest_dir, os.path.basename(path))
        st = os.stat(path)
        _write_json(sidecar, {
            "file": os.path.basename(path),
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": sha256_file(path),
            "guid_sha256": url_hash(guid, 64),
            "facts": facts,
        })
        return path, facts

    def _reusable(self, dest_dir: str, sidecar: str, guid: str) -> Optional[tuple[str, dict[str, Any]]]:
        try:
            with open(sidecar, encoding="utf-8") as f:
                doc = json.load(f)
            path = contained_path(dest_dir, str(doc["file"]))
            st = os.stat(path)
        except (OSError, ValueError, KeyError, TypeError, RejectError):
            return None
        if doc.get("guid_sha256") != url_hash(guid, 64) or st.st_size != doc.get("bytes") or "facts" not in doc:
            return None
        if st.st_mtime_ns != doc.get("mtime_ns"):  # touched: trust the content hash only
            if sha256_file(path) != doc.get("sha256"):
                return None
            doc["mtime_ns"] = st.st_mtime_ns
            _write_json(sidecar, doc)
        return path, doc["facts"]

    # -- per recording

    def read_audio(self, task: RecordingTask) -> DecodedAudio:
        return decode_file(task.audio_path)

    def assign_roles(self, task: RecordingTask, speakers: Sequence[Speaker], utterances: Sequence[Utterance]) -> None:
        """Called by the analysis path after diarization (pipelines/process.py)."""
        assign_roles(task.metadata.get("role_hint"), speakers, utterances)

    # No read_transcript: tasks are `needs_analysis`, so their speakers and words come from the
    # analysis stage (stages/analysis/analyzer.py) and never from a transcript file.
