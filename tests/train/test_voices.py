"""train/voices.py: voice keys from stable speaker identities, and the voice table."""
from __future__ import annotations

import json

import pytest

from train.voices import UNKNOWN, VoiceTable, build_voice_table, voice_key

FEED = json.dumps({"feed_url": "https://example.org/feed.xml", "role_hint": {"policy": "host_first", "host": "host"}})


def test_voice_keys_follow_the_most_stable_identity():
    # LDC: the PIN-based id is already the same caller in every call.
    assert voice_key("fisher-spk-90105", "fisher-fe_03_00001", "fisher", "A") == "fisher-spk-90105"
    # A podcast host: one voice across the feed's episodes; a guest stays per episode.
    host_1 = voice_key("podcasts-ep1-SPEAKER_00", "podcasts-ep1", "podcasts", "host", "{}", FEED)
    host_2 = voice_key("podcasts-ep2-SPEAKER_01", "podcasts-ep2", "podcasts", "host", "{}", FEED)
    assert host_1 == host_2 and host_1.startswith("podcasts:feed:") and host_1.endswith(":host")
    assert voice_key("podcasts-ep1-SPEAKER_01", "podcasts-ep1", "podcasts", "guest", "{}", FEED) == "podcasts-ep1-SPEAKER_01"
    other_feed = json.dumps({"feed_url": "https://example.org/other.xml"})
    assert voice_key("podcasts-ep9-SPEAKER_00", "podcasts-ep9", "podcasts", "host", "{}", other_feed) != host_1
    # A page (no feed) has no feed identity: per recording.
    assert voice_key("podcasts-p-SPEAKER_00", "podcasts-p", "podcasts", "host", "{}", "{}") == "podcasts-p-SPEAKER_00"
    # A synthetic speaker is its TTS voice; a source may name the key itself.
    tts = json.dumps({"voice_id": "espeak:en-us+f3"})
    assert voice_key("syn-r1-A", "syn-r1", "synthetic", "user", tts) == "synthetic:tts:espeak:en-us+f3"
    assert voice_key("x-r-A", "x-r", "local", None, json.dumps({"voice_key": "alice"})) == "alice"
    assert voice_key("x-r-A", "x-r", "local", None, "not json") == "x-r-A"


def test_voice_table_ranks_caps_and_pools_rare_voices():
    rows = [("h1", "feed:host", 30), ("h2", "feed:host", 25), ("pin-7", "pin-7", 40), ("g1", "g1", 3),
            ("g2", "g2", 19), ("pin-8", "pin-8", 20)]
    table = build_voice_table(rows, capacity=4, min_pairs=20)
    assert table.keys == ["feed:host", "pin-7", "pin-8"]  # 55, 40, 20 pairs; g2 (19) is rare
    assert table.speakers == {"h1": 1, "h2": 1, "pin-7": 2, "pin-8": 3}
    assert table.size == 4 and table.pairs["feed:host"] == 55
    assert table.index("h2") == 1 and table.index("pin-8") == 3 and table.index("") == UNKNOWN
    assert build_voice_table(rows, capacity=2, min_pairs=1).keys == ["feed:host"]  # the cap keeps the largest
    with pytest.raises(KeyError, match="'g1' is neither"):
        table.index("g1")
    assert VoiceTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
