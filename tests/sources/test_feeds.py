"""stages/sources/feeds.py: RSS and Atom parsing, GUIDs, dates, durations, malformed input, selection."""
from __future__ import annotations

from datetime import date

import pytest

from stages.sources.feeds import Episode, parse_duration, parse_feed, select_episodes, url_guid
from stages.errors import RejectError

FEED_URL = "http://127.0.0.1:9/podcast/feed.xml"

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
<channel>
  <title>Loopback Talks</title>
  <link>http://127.0.0.1:9/podcast/</link>
  <item>
    <title>Episode   two</title>
    <guid isPermaLink="false">ep-0002</guid>
    <pubDate>Tue, 02 Jan 2024 10:00:00 +0100</pubDate>
    <link>http://127.0.0.1:9/podcast/2</link>
    <enclosure url="http://127.0.0.1:9/audio/2.mp3" length="12345" type="audio/mpeg"/>
    <itunes:duration>1:02:03</itunes:duration>
  </item>
  <item>
    <title>Episode one</title>
    <guid>ep-0001</guid>
    <pubDate>Mon, 01 Jan 2024 09:00:00 GMT</pubDate>
    <enclosure url="audio/1.m4a" length="0" type="audio/x-m4a"/>
    <itunes:duration>62:03</itunes:duration>
  </item>
  <item>
    <title>Video only</title>
    <guid>ep-video</guid>
    <enclosure url="http://127.0.0.1:9/v.mp4" length="1" type="video/mp4"/>
  </item>
  <item>
    <title>Blog post, no enclosure</title>
    <guid>ep-text</guid>
  </item>
  <item>
    <title>No guid, untyped enclosure</title>
    <pubDate>Wed, 03 Jan 2024 00:30:00 GMT</pubDate>
    <enclosure url="http://127.0.0.1:9/audio/3.ogg"/>
    <itunes:duration>95</itunes:duration>
  </item>
  <item>
    <title>Duplicate guid</title>
    <guid>ep-0001</guid>
    <enclosure url="http://127.0.0.1:9/audio/1-again.mp3" type="audio/mpeg"/>
  </item>
</channel>
</rss>
"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom Pod</title>
  <id>urn:uuid:feed</id>
  <updated>2024-03-01T00:00:00Z</updated>
  <entry>
    <title>Atom episode</title>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <updated>2024-03-01T12:00:00Z</updated>
    <published>2024-02-28T12:00:00Z</published>
    <link rel="alternate" href="http://127.0.0.1:9/atom/1"/>
    <link rel="enclosure" type="audio/ogg" href="http://127.0.0.1:9/atom/1.ogg" length="999"/>
  </entry>
  <entry>
    <title>Atom text entry</title>
    <id>urn:uuid:text</id>
    <updated>2024-03-02T12:00:00Z</updated>
    <link rel="alternate" href="http://127.0.0.1:9/atom/2"/>
  </entry>
</feed>
"""


def test_rss_episodes():
    eps = parse_feed(RSS, FEED_URL)
    assert [e.guid for e in eps] == ["ep-0002", "ep-0001", url_guid("http://127.0.0.1:9/audio/3.ogg")]
    two, one, three = eps
    assert two.title == "Episode two" and two.feed_title == "Loopback Talks"
    assert two.published == "2024-01-02T09:00:00+00:00"  # converted to UTC
    assert two.audio_url == "http://127.0.0.1:9/audio/2.mp3" and two.audio_type == "audio/mpeg"
    assert two.audio_length == 12345 and two.duration_s == 3723.0
    assert two.page_url == "http://127.0.0.1:9/podcast/2" and two.feed_url == FEED_URL
    # a relative enclosure resolves against the feed URL; a zero length is unknown
    assert one.audio_url == "http://127.0.0.1:9/podcast/audio/1.m4a" and one.audio_length is None
    assert one.duration_s == 3723.0
    assert three.guid.startswith("urlhash:") and len(three.guid) == len("urlhash:") + 64
    assert three.duration_s == 95.0 and three.audio_type is None


def test_atom_enclosure_link():
    (ep,) = parse_feed(ATOM, "http://127.0.0.1:9/atom.xml")
    assert ep.guid == "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"
    assert ep.audio_url == "http://127.0.0.1:9/atom/1.ogg" and ep.audio_type == "audio/ogg"
    assert ep.published == "2024-02-28T12:00:00+00:00"
    assert ep.page_url == "http://127.0.0.1:9/atom/1" and ep.feed_title == "Atom Pod"


@pytest.mark.parametrize("doc", [b"", b"this is not xml {{{", b"<html><body><p>hello</p></body></html>",
                                 b"<?xml version='1.0'?><rss><channel><title>x</titl"])
def test_malformed_feed(doc):
    with pytest.raises(RejectError) as e:
        parse_feed(doc, FEED_URL)
    assert e.value.reason == "feed_malformed" and e.value.detail


def test_bytes_are_never_read_as_a_file_name(tmp_path):
    secret = tmp_path / "feed.xml"
    secret.write_bytes(RSS)
    with pytest.raises(RejectError) as e:
        parse_feed(str(secret).encode(), FEED_URL)
    assert e.value.reason == "feed_malformed"


def test_external_entities_not_expanded(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    doc = f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>
<rss version="2.0"><channel><title>t</title><item><title>&xxe;</title><guid>g</guid>
<enclosure url="http://127.0.0.1:9/a.mp3" type="audio/mpeg"/></item></channel></rss>""".encode()
    eps = parse_feed(doc, FEED_URL)
    assert all("TOPSECRET" not in e.title for e in eps)


def test_feed_without_audio_enclosures_is_empty():
    doc = b"""<rss version="2.0"><channel><title>Blog</title>
      <item><title>a</title><guid>a</guid><link>http://127.0.0.1:9/a</link></item>
      <item><title>b</title><guid>b</guid><enclosure url="http://127.0.0.1:9/b.pdf" type="application/pdf"/></item>
    </channel></rss>"""
    assert parse_feed(doc, FEED_URL) == []
    assert parse_feed(b'<rss version="2.0"><channel><title>Empty</title></channel></rss>', FEED_URL) == []


def test_recovered_feed_keeps_its_entries():
    # unescaped ampersand: not well-formed XML, but feedparser's lenient parser recovers it
    doc = b"""<rss version="2.0"><channel><title>A & B</title>
      <item><title>x</title><guid>x</guid><enclosure url="http://127.0.0.1:9/x.mp3" type="audio/mpeg"/></item>
    </channel></rss>"""
    (ep,) = parse_feed(doc, FEED_URL)
    assert ep.guid == "x"


def test_parse_duration():
    assert parse_duration("3723") == 3723.0
    assert parse_duration("62:03") == 3723.0
    assert parse_duration("1:02:03") == 3723.0
    assert parse_duration("12.5") == 12.5
    for bad in (None, "", "abc", "1:2:3:4", "-5"):
        assert parse_duration(bad) is None


def _ep(guid: str, published: str | None) -> Episode:
    return Episode(guid, guid, published, f"http://h/{guid}.mp3", None, None, FEED_URL)


EPISODES = [
    _ep("b", "2024-02-01T00:00:00+00:00"),
    _ep("nodate", None),
    _ep("d", "2024-04-01T00:00:00+00:00"),
    _ep("a", "2024-01-01T23:59:59+00:00"),
    _ep("c", "2024-03-01T00:00:00+00:00"),
]


def test_select_newest_first_and_max():
    assert [e.guid for e in select_episodes(EPISODES)] == ["d", "c", "b", "a", "nodate"]
    assert [e.guid for e in select_episodes(EPISODES, max_episodes=2)] == ["d", "c"]
    assert select_episodes(EPISODES, max_episodes=0) == []


def test_select_date_range_inclusive():
    picked = select_episodes(EPISODES, since=date(2024, 1, 1), until=date(2024, 3, 1))
    assert [e.guid for e in picked] == ["c", "b", "a"]  # undated dropped under a bound
    picked = select_episodes(EPISODES, max_episodes=1, since=date(2024, 2, 1))
    assert [e.guid for e in picked] == ["d"]
    assert select_episodes(EPISODES, until=date(2023, 12, 31)) == []
