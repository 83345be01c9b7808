"""Voice identities for the S2S model: a table from stable speaker identities to voice indices.

The decoder's voice embedding (``model.s2s``, ``ai_voice``) should mean one voice. A speaker id
that is only unique within a recording (``<recording_id>-A``) would give a podcast host a new
voice every episode, and hashing ids into a fixed number of buckets mixes unrelated voices. So
each speaker gets a *voice key*, the most stable identity its records carry:

- a ``voice_key`` the source wrote into the speaker's metadata (a source that knows better);
- a synthetic TTS voice (``voice_id`` in the speaker's metadata): ``<source>:tts:<voice id>``;
- a corpus-wide speaker id, one that is not prefixed by its recording id (LDC PINs:
  ``fisher-spk-90105`` is the same caller in every call);
- a podcast host (the speaker whose role is the feed's host role): ``<source>:feed:<sha256 of
  the feed URL, 16 hex>:host``, one voice across the feed's episodes;
- otherwise the per-recording speaker id (a guest, a diarized speaker).

``build_voice_table`` ranks the keys by how many pairs they speak the AI turn of; the top
``capacity - 1`` keys with at least ``min_pairs`` pairs get indices 1.., every other speaker
shares index 0 (unknown or rare: too few pairs to learn a voice from). The table is saved in
``s2s.pt`` (and in every checkpoint), so inference and fine-tuning use the same indices.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

UNKNOWN = 0


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def voice_key(speaker_id: str, recording_id: str, source: str, role: Optional[str],
              speaker_metadata: Any = None, recording_metadata: Any = None) -> str:
    """The identity of a speaker's voice across recordings (see the module doc)."""
    meta = _json(speaker_metadata)
    if isinstance(meta.get("voice_key"), str) and meta["voice_key"]:
        return meta["voice_key"]
    if isinstance(meta.get("voice_id"), str) and meta["voice_id"]:
        return f"{source}:tts:{meta['voice_id']}"
    if not speaker_id.startswith(f"{recording_id}-"):
        return speaker_id
    rec = _json(recording_metadata)
    feed = rec.get("feed_url")
    hint = rec.get("role_hint") if isinstance(rec.get("role_hint"), dict) else {}
    host_role = hint.get("host") or "host"
    if role and role == host_role and isinstance(feed, str) and feed:
        return f"{source}:feed:{hashlib.sha256(feed.encode('utf-8')).hexdigest()[:16]}:host"
    return speaker_id


@dataclass
class VoiceTable:
    """``keys[i - 1]`` is voice index i; ``speakers`` maps a speaker id to its index (absent:
    ``UNKNOWN``); ``pairs`` counts the AI pairs of each kept key."""

    keys: list[str] = field(default_factory=list)
    speakers: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.keys) + 1

    def index(self, name: str) -> int:
        """A voice key or a speaker id -> index; "" -> UNKNOWN; KeyError when neither is known."""
        if not name:
            return UNKNOWN
        if name in self.speakers:
            return self.speakers[name]
        try:
            return self.keys.index(name) + 1
        except ValueError:
            shown = ", ".join(self.keys[:5]) + (" ..." if len(self.keys) > 5 else "")
            raise KeyError(f"voice {name!r} is neither a voice key nor a speaker id of this model's "
                           f"voice table ({len(self.keys)} voices: {shown or 'none'})") from None

    def to_dict(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "speakers": dict(self.speakers), "pairs": dict(self.pairs)}

    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> "VoiceTable":
        d = d or {}
        return cls(list(d.get("keys", [])), {str(k): int(v) for k, v in d.get("speakers", {}).items()},
                   {str(k): int(v) for k, v in d.get("pairs", {}).items()})


def build_voice_table(rows: Iterable[tuple[str, str, int]], capacity: int, min_pairs: int = 1) -> VoiceTable:
    """``rows``: (speaker_id, voice key, AI pairs of that speaker). Index 0 is kept for unknown
    and rare voices, so at most ``capacity - 1`` keys get an index of their own."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    by_key: dict[str, int] = {}
    speaker_key: dict[str, str] = {}
    for speaker_id, key, n in rows:
        speaker_key[speaker_id] = key
        by_key[key] = by_key.get(key, 0) + int(n)
    ranked = sorted((k for k, n in by_key.items() if n >= min_pairs), key=lambda k: (-by_key[k], k))
    keys = ranked[: capacity - 1]
    index = {k: i + 1 for i, k in enumerate(keys)}
    speakers = {s: index[k] for s, k in sorted(speaker_key.items()) if k in index}
    return VoiceTable(keys, speakers, {k: by_key[k] for k in keys})


VOICE_ROWS_SQL = """
SELECT s.speaker_id, s.recording_id, s.source, s.role, s.metadata_json, r.metadata_json,
       count(p.pair_id) AS ai_pairs
FROM speakers AS s
JOIN recordings AS r USING (recording_id)
LEFT JOIN pairs AS p ON p.ai_speaker_id = s.speaker_id AND p.recording_id = s.recording_id
GROUP BY ALL
ORDER BY s.speaker_id, s.recording_id
"""


def catalog_voice_rows(con: Any) -> list[tuple[str, str, int]]:
    """(speaker_id, voice key, AI pairs) of every speaker of a corpus catalog (a DuckDB
    connection with the catalog's views)."""
    out = []
    for sid, rid, source, role, smeta, rmeta, n in con.execute(VOICE_ROWS_SQL).fetchall():
        out.append((sid, voice_key(sid, rid, source, role, smeta, rmeta), int(n)))
    return out
