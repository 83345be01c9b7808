"""Podcast feeds (RSS 2.0, Atom) to episodes: audio enclosures, GUIDs, dates, durations.

Parsing never touches the network or the file system: feedparser gets the bytes as a stream
(given plain bytes it would treat them as a file name) and its SAX parser has external
entities disabled.
"""
from __future__ import annotations

import calendar
import hashlib
import io
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Optional, Sequence
from urllib.parse import urljoin, urlsplit

import feedparser

from stages.errors import RejectError

# Enclosures typed like this (or untyped, with an audio file extension) count as audio.
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_AUDIO_URL_EXTENSIONS = {".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wav", ".flac"}


@dataclass(frozen=True)
class Episode:
    guid: str  # the feed's GUID / Atom id; "urlhash:<sha256 of audio_url>" when it has none
    title: str
    published: Optional[str]  # ISO 8601 UTC date-time ("2024-05-01T10:00:00+00:00"), None if undated
    audio_url: str  # absolute (resolved against the feed URL)
    page_url: Optional[str]
    duration_s: Optional[float]  # from itunes:duration, when given
    feed_url: str
    feed_title: str = ""
    audio_type: Optional[str] = None  # the enclosure's MIME type as the feed states it
    audio_length: Optional[int] = None  # the enclosure's stated byte length (often wrong or 0)
    feed_rights: str = ""  # the feed's copyright / rights text

    @property
    def published_date(self) -> Optional[date]:
        return date.fromisoformat(self.published[:10]) if self.published else None


def parse_duration(value: Any) -> Optional[float]:
    """itunes:duration as seconds: "3723", "62:03", "1:02:03", "3723.5"; None if unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    parts = text.split(":")
    if len(parts) > 3:
        return None
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        return None
    if any(n < 0 for n in nums):
        return None
    seconds = 0.0
    for n in nums:
        seconds = seconds * 60 + n
    return seconds


def _iso(struct: Any) -> Optional[str]:
    if not struct:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(struct), tz=timezone.utc).isoformat()
    except (OverflowError, ValueError, TypeError):
        return None


def _is_audio(href: str, mime: str) -> bool:
    mime = (mime or "").split(";")[0].strip().lower()
    if mime.startswith("audio/"):
        return True
    if mime in _GENERIC_TYPES:
        return os.path.splitext(urlsplit(href).path)[1].lower() in _AUDIO_URL_EXTENSIONS
    return False


def _audio_enclosure(entry: Any) -> Optional[dict[str, Any]]:
    """The entry's first audio enclosure (RSS enclosure, Atom rel=enclosure link, or
    media:content), as {href, type, length}."""
    candidates: list[dict[str, Any]] = []
    candidates.extend(entry.get("enclosures") or [])
    for media in entry.get("media_content") or []:
        candidates.append({"href": media.get("url", ""), "type": media.get("type", ""),
                           "length": media.get("filesize") or media.get("fileSize")})
    for c in candidates:
        href = (c.get("href") or c.get("url") or "").strip()
        if href and _is_audio(href, c.get("type", "")):
            return {"href": href, "type": c.get("type") or None, "length": c.get("length")}
    return None


def _int_or_none(value: Any) -> Optional[int]:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def _http_or_none(url: Any) -> Optional[str]:
    if not url:
        return None
    return url if urlsplit(str(url)).scheme.lower() in ("http", "https") else None


def url_guid(audio_url: str) -> str:
    return "urlhash:" + hashlib.sha256(audio_url.encode("utf-8")).hexdigest()


def parse_feed(xml_bytes: bytes, feed_url: str) -> list[Episode]:
    """Episodes with an audio enclosure, in feed order. Entries without one are skipped; a GUID
    seen twice keeps its first entry. Unparseable input raises RejectError("feed_malformed")."""
    # No base URL is given: feedparser would resolve relative GUIDs against it, and a GUID must
    # not change when a feed moves. Enclosure and page URLs are resolved here instead.
    parsed = feedparser.parse(io.BytesIO(xml_bytes))
    entries = parsed.get("entries") or []
    if not entries and (parsed.get("bozo") or not parsed.get("version")):
        why = parsed.get("bozo_exception")
        detail = f"{type(why).__name__}: {why}" if why else "not an RSS or Atom document"
        raise RejectError("feed_malformed", detail[:500])
    feed_title = str(parsed.get("feed", {}).get("title") or "").strip()
    feed_rights = re.sub(r"\s+", " ", str(parsed.get("feed", {}).get("rights") or "")).strip()
    episodes: list[Episode] = []
    seen: set[str] = set()
    for entry in entries:
        enclosure = _audio_enclosure(entry)
        if enclosure is None:
            continue
        audio_url = urljoin(feed_url, enclosure["href"])
        guid = str(entry.get("id") or "").strip() or url_guid(audio_url)
        if guid in seen:
            continue
        seen.add(guid)
        page = entry.get("link")
        episodes.append(
            Episode(
                guid=guid,
                title=re.sub(r"\s+", " ", str(entry.get("title") or "")).strip(),
                published=_iso(entry.get("published_parsed") or entry.get("updated_parsed")),
                audio_url=audio_url,
                page_url=_http_or_none(urljoin(feed_url, page) if page else None),
                duration_s=parse_duration(entry.get("itunes_duration")),
                feed_url=feed_url,
                feed_title=feed_title,
                feed_rights=feed_rights,
                audio_type=enclosure["type"],
                audio_length=_int_or_none(enclosure["length"]),
            )
        )
    return episodes


def select_episodes(
    episodes: Sequence[Episode],
    max_episodes: Optional[int] = None,
    since: Optional[date] = None,
    until: Optional[date] = None,
) -> list[Episode]:
    """Newest first, within [since, until] (inclusive, by UTC date), at most max_episodes.

    Undated episodes sort after dated ones (keeping feed order) and are dropped when a date
    bound is given, since they cannot be shown to fall inside it."""
    chosen = []
    for ep in episodes:
        d = ep.published_date
        if (since or until) and d is None:
            continue
        if since and d < since:
            continue
        if until and d > until:
            continue
        chosen.append(ep)
    dated = sorted((e for e in chosen if e.published), key=lambda e: e.published, reverse=True)
    undated = [e for e in chosen if not e.published]
    ordered = dated + undated
    return ordered if max_episodes is None else ordered[:max_episodes]
