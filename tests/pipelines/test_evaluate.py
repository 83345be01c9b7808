"""Labelled test conversations (real espeak-ng audio, RTTM/STM, an RSS feed on loopback) and
`pipelines.evaluate` end to end on corpus catalogs written directly (no ASR)."""
from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.request

import feedparser
import numpy as np
import pytest
import soundfile as sf

from catalog.parquet import write_table
from catalog.schema import Conversation, Recording, Speaker, Turn, Utterance, to_arrow
from catalog.store import Store
from catalog.versions import Part, Version, commit
from pipelines.evaluate import main as evaluate_main
from pipelines.evaluate import evaluate, origin_stem, recording_keys
from stages.config import SegmentConfig
from stages.metrics import read_rttm, read_stm
from stages.corpus.segment import segment
from stages.sources.demo.conversations import (
    ConversationSpec,
    LineSpec,
    SpeakerSpec,
    load_conversation,
    make_conversation,
    standard_test_set,
    voice,
    write_feed,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return str(out), standard_test_set(str(out))


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x ** 2)) + 1e-12)


# --- the generator ---------------------------------------------------------------------------


def test_standard_set_files_and_references(synth):
    out, convs = synth
    assert [len(c.speakers) for c in convs] == [2, 2, 3, 1]
    for c in convs:
        for p in (c.audio_path, c.rttm_path, c.stm_path, c.timeline_path):
            assert os.path.exists(p) and p.startswith(out)
        info = sf.info(c.audio_path)
        assert info.channels == 1 and info.samplerate == 16000 and info.subtype == "PCM_16"
        assert info.frames / info.samplerate == pytest.approx(c.duration_s, abs=1e-3)
        assert 20 <= c.duration_s <= 40
        rttm = read_rttm(c.rttm_path)
        assert list(rttm) == [c.uri] and set(rttm[c.uri].labels()) == set(c.speakers)
        stm = read_stm(c.stm_path)[c.uri]
        assert stm == sorted(((s.speaker, s.start_s, s.end_s, s.text) for s in c.segments),
                             key=lambda e: (e[1], e[2], e[0]))
        # RTTM segments are the lines' speech regions: inside the lines, covering most of them
        speech = sum(s.duration for s in rttm[c.uri].itersegments())
        assert 0.85 * sum(s.end_s - s.start_s for s in c.segments) <= speech <= sum(s.end_s - s.start_s for s in c.segments)
        assert max(s.end for s in rttm[c.uri].itersegments()) < c.duration_s
        assert load_conversation(c.timeline_path) == c


def test_overlap_backchannel_and_panel_are_in_the_timelines(synth):
    _, convs = synth
    two_overlap, panel = convs[1], convs[2]
    for c in (two_overlap, panel):
        floor = c.floor_segments
        assert any(b.start_s < a.end_s for a, b in zip(floor, floor[1:]))  # a floor line starts in overlap
        bcs = [s for s in c.segments if s.backchannel]
        assert bcs and all(any(f.start_s < b.start_s and b.end_s < f.end_s and f.speaker != b.speaker
                                for f in floor) for b in bcs)
    assert not any(s.backchannel for s in convs[0].segments)
    assert all(b.start_s > a.end_s for a, b in zip(convs[0].segments, convs[0].segments[1:]))


def test_audio_has_speech_in_every_segment_and_silence_in_gaps(synth):
    _, convs = synth
    for c in convs:
        x, sr = sf.read(c.audio_path, dtype="float64")
        regions = sorted((s.start, s.end) for s in read_rttm(c.rttm_path)[c.uri].itersegments())
        for a, b in regions:
            assert rms_db(x[int(a * sr): int(b * sr)]) > -35, (c.uri, a, b)
        # the stretches no region covers (before the first, between, after the last), 20 ms in
        quiet, covered = 0, 0.0
        for a, b in regions + [(c.duration_s, c.duration_s)]:
            if a - covered >= 0.1:
                assert rms_db(x[int((covered + 0.02) * sr): int((a - 0.02) * sr)]) < -55, (c.uri, covered, a)
                quiet += 1
            covered = max(covered, b)
        assert quiet >= len(c.floor_segments) - 1


def test_generation_is_idempotent_and_deterministic(synth, tmp_path):
    out, convs = synth
    spec = ConversationSpec(uri="tiny", speakers=(SpeakerSpec("a", voice("karen")), SpeakerSpec("b", voice("tom"))),
                            lines=(LineSpec("a", "Hello there."), LineSpec("b", "Hi, how are you?", -0.2)))
    first = make_conversation(str(tmp_path / "one"), spec, seed=3)
    mtime = os.stat(first.audio_path).st_mtime_ns
    assert make_conversation(str(tmp_path / "one"), spec, seed=3) == first
    assert os.stat(first.audio_path).st_mtime_ns == mtime
    other = make_conversation(str(tmp_path / "two"), spec, seed=3)
    with open(first.audio_path, "rb") as f1, open(other.audio_path, "rb") as f2:
        assert f1.read() == f2.read()
    assert first.segments[1].start_s < first.segments[0].end_s  # the -0.2 s gap is an overlap


@pytest.mark.parametrize("bad, match", [
    (dict(speakers=(SpeakerSpec("a", voice("karen")), SpeakerSpec("b", voice("karen")))), "same voice"),
    (dict(speakers=(SpeakerSpec("a", voice("karen")), SpeakerSpec("b", dataclasses.replace(voice("maria"), pitch=62)))),
     "different espeak"),
    (dict(channel="radio"), "channel"),
    (dict(lines=(LineSpec("a", "yeah", backchannel=True),)), "first line"),
    (dict(lines=(LineSpec("a", "Hi."), LineSpec("b", "a very long backchannel that goes on and on", 0.1, True))),
     "outlasts"),
    (dict(lang="xx"), "espeak-ng voices here"),
    (dict(uri="has space"), "file stem"),
])
def test_bad_specs_are_refused(tmp_path, bad, match):
    base = dict(uri="bad", speakers=(SpeakerSpec("a", voice("karen")), SpeakerSpec("b", voice("tom"))),
                lines=(LineSpec("a", "Hello."),))
    with pytest.raises(ValueError, match=match):
        make_conversation(str(tmp_path), ConversationSpec(**{**base, **bad}), seed=0)


def test_feed_served_on_loopback(synth):
    out, convs = synth
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=out)
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        path = write_feed(out, convs, base + "/")
        assert path == os.path.join(out, "feed.xml")
        feed = feedparser.parse(urllib.request.urlopen(base + "/feed.xml", timeout=10).read())
        assert not feed.bozo and feed.version == "rss20" and feed.feed.language == "en"
        assert [e.id for e in feed.entries] == [c.uri for c in convs]
        dates = [e.published_parsed for e in feed.entries]
        assert all(dates) and dates == sorted(dates) and len(set(dates)) == len(dates)
        for entry, conv in zip(feed.entries, convs):
            (enc,) = entry.enclosures
            assert enc.href == f"{base}/audio/{conv.uri}.wav" and int(enc.length) == os.path.getsize(conv.audio_path)
        body = urllib.request.urlopen(feed.entries[3].enclosures[0].href, timeout=10).read()
        with open(convs[3].audio_path, "rb") as f:
            assert body == f.read()
    finally:
        server.shutdown()
        server.server_close()


# --- evaluate on catalogs written directly -----------------------------------------------------


def recording(source: str, origin_id: str, origin: str, duration: float, metadata: dict | None = None) -> Recording:
    return Recording(
        recording_id=f"{source}-{origin_id}", source=source, origin_id=origin_id, origin=origin, license="test",
        lang="en", native_sample_rate=16000, num_channels=1, duration_s=duration, encoding="pcm_s16le",
        audio_sha256="0" * 64, audio_path=f"recordings/{source}/{origin_id}.flac", sample_rate=24000,
        bandwidth="wideband", effective_bandwidth_hz=8000.0, metadata_json=json.dumps(metadata or {}),
    )


def conversation(rec: Recording, lines: list[tuple[str, float, float, str]]) -> Conversation:
    """(speaker label, start, end, text) → a Conversation as a one-microphone source makes it."""
    labels = sorted({spk for spk, *_ in lines})
    speakers = [Speaker(f"{rec.recording_id}-{lbl}", rec.recording_id, rec.source, lbl) for lbl in labels]
    utts = [Utterance(f"{rec.recording_id}-u{i:04d}", rec.recording_id, rec.source, f"{rec.recording_id}-{spk}",
                      None, a, b, text, text, "en") for i, (spk, a, b, text) in enumerate(lines)]
    return Conversation(rec, speakers, utts)


def write_corpus(out: str, convs: list[Conversation]) -> None:
    """The catalog part a build would commit: Parquet per table, a version with one part."""
    store = Store(out)
    turns: list[Turn] = []
    for c in convs:
        turns += segment(c, SegmentConfig()).turns
    tables = {
        Recording: [c.recording for c in convs],
        Speaker: [s for c in convs for s in c.speakers],
        Utterance: [u for c in convs for u in c.utterances],
        Turn: turns,
    }
    files = {}
    for cls, records in tables.items():
        rel = f"catalog/{cls.table}/source=test/part-p1.parquet"
        write_table(store, rel, cls, to_arrow(cls, records))
        files[cls.table] = [rel]
    items = {c.recording.recording_id: "key" for c in convs}
    commit(store, Version("v-test", None, [Part("p1", "config", items, files)]))


REF_LINES = [("A", 0.0, 4.0, "so how was the trip to the coast"),
             ("B", 4.5, 8.0, "it was long but the weather held up"),
             ("A", 8.2, 12.0, "did you get to see the lighthouse"),
             ("B", 12.5, 15.0, "we did on the last morning")]


def write_refs(ref_dir, uri: str, lines) -> None:
    os.makedirs(ref_dir, exist_ok=True)
    with open(os.path.join(ref_dir, f"{uri}.rttm"), "w") as f:
        for spk, a, b, _ in lines:
            f.write(f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {spk} <NA> <NA>\n")
    with open(os.path.join(ref_dir, f"{uri}.stm"), "w") as f:
        for spk, a, b, text in lines:
            f.write(f"{uri} 1 {spk} {a:.3f} {b:.3f} {text}\n")


def test_evaluate_cli_scores_a_deliberate_speaker_error(tmp_path):
    refs, out = tmp_path / "refs", tmp_path / "corpus"
    write_refs(str(refs), "trip_ep1", REF_LINES)
    # The hypothesis gives A's second line to the other speaker and mishears one word.
    hyp = [("S0", 0.0, 4.0, REF_LINES[0][3]),
           ("S1", 4.5, 8.0, "it was long but the weather held up"),
           ("S1", 8.2, 12.0, "did you get to see the light house"),
           ("S1", 12.5, 15.0, REF_LINES[3][3])]
    # As the podcasts source records an episode: the download under a hashed name, the GUID
    # hashed into origin_id, the enclosure URL in the metadata.
    matching = conversation(recording("podcasts", "1f2e3d4c5b6a7988", "/corpus/work/podcasts/ab12/9c8d7e6f.mp3", 16.0,
                                      {"audio_url": "http://127.0.0.1:9/ep/trip_ep1.mp3?dl=1", "guid": "g-1"}), hyp)
    unrelated = conversation(recording("local", "other", "/data/other.wav", 5.0),
                             [("S0", 0.5, 2.0, "nothing to see")])
    write_corpus(str(out), [matching, unrelated])

    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.evaluate", "--reference", str(refs), "--out", str(out),
         "--json", str(report_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    (row,) = report["recordings"]
    assert row["uri"] == "trip_ep1" and row["recording_id"] == "podcasts-1f2e3d4c5b6a7988"
    assert (row["ref_speakers"], row["hyp_speakers"]) == (2, 2)
    # Collar ±0.25 s: scored speech 3.5 + 3.0 + 3.3 + 2.0 = 11.8 s, of which A's 3.3 s is confused.
    d = report["total"]["diarization"]
    assert d["der"] == pytest.approx(3.3 / 11.8) and d["confusion_s"] == pytest.approx(3.3)
    assert d["missed_s"] == pytest.approx(0) and d["false_alarm_s"] == pytest.approx(0)
    # No overlapped reference speech: DER outside overlap is the DER. JER weighs each reference
    # speaker alike: A lost a third of its speech to B, B's Jaccard index shrank by A's line.
    assert d["der_no_overlap"] == pytest.approx(d["der"])
    assert 0.2 < d["jer"] < 0.6 and row["diarization"]["jer"] == pytest.approx(d["jer"])
    assert report["total"]["speakers"] == {"count_accuracy": 1.0, "mean_abs_count_error": 0.0}
    # "lighthouse" → "light house": one substitution and one insertion over 29 words
    t = report["total"]["transcript"]
    assert (t["substitutions"], t["insertions"], t["deletions"]) == (1, 1, 0) and t["wer"] == pytest.approx(2 / 29)
    # Reference transfers at 4.5, 8.2, 12.5; the hypothesis's one speaker keeps the floor after 4.5.
    tm = report["total"]["turns"]
    assert (tm["n_ref"], tm["n_hyp"], tm["matched"]) == (3, 1, 1)
    assert tm["precision"] == 1.0 and tm["recall"] == pytest.approx(1 / 3) and tm["f1"] == pytest.approx(0.5)
    assert report["unmatched_recordings"] == 1 and report["unmatched_references"] == []

    lines = proc.stdout.splitlines()
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert f"{100 * 3.3 / 11.8:.1f}%" in total.split() and "6.9%" in total.split()
    assert any(line.startswith("trip_ep1") and " 2/2 " in line for line in lines)
    assert "recordings without a reference (ignored): 1" in proc.stdout


def test_evaluate_exits_nonzero_when_nothing_matches(tmp_path, capsys):
    refs, out = tmp_path / "refs", tmp_path / "corpus"
    write_refs(str(refs), "some_other_show", REF_LINES)
    write_corpus(str(out), [conversation(recording("local", "abc", "/data/trip_ep1.wav", 16.0), REF_LINES)])
    assert evaluate_main(["--reference", str(refs), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no recording" in err and "some_other_show" in err and "trip_ep1" in err
    # no references at all, and no corpus at all
    os.makedirs(tmp_path / "empty")
    assert evaluate_main(["--reference", str(tmp_path / "empty"), "--out", str(out)]) == 1
    assert "no RTTM or STM references" in capsys.readouterr().err
    assert evaluate_main(["--reference", str(refs), "--out", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_origin_matching_rule():
    assert origin_stem("/data/show/ep1.wav") == "ep1"
    assert origin_stem("https://cdn.example.org/a/b/ep%201.mp3?token=x#t") == "ep 1"
    assert origin_stem("fe_03_00001.sph") == "fe_03_00001"
    assert recording_keys("/w/ab.mp3", "ab", '{"audio_url": "http://h/x/ep2.wav", "guid": "tag:1"}') == \
        ["ab", "ab", "ep2", "tag:1"]
    assert recording_keys("/d/fe_03_00001.sph", "fe_03_00001", "not json") == ["fe_03_00001", "fe_03_00001"]


def test_generated_references_score_perfectly_against_themselves(synth, tmp_path):
    """The generator's references through evaluate: a hypothesis made of the STM lines scores
    no miss, no confusion, no word error and every floor transfer; its only false alarm is the
    pauses inside lines, which the RTTM leaves out."""
    out_dir, convs = synth
    # matched by GUID: the feed's GUIDs are the uris
    built = [conversation(recording("podcasts", f"ep{i}", f"/work/podcasts/{i:04x}.wav", c.duration_s, {"guid": c.uri}),
                          [(s.speaker, s.start_s, s.end_s, s.text) for s in c.segments])
             for i, c in enumerate(convs)]
    write_corpus(str(tmp_path / "corpus"), built)
    report = evaluate(str(tmp_path / "corpus"), os.path.join(out_dir, "refs"), collar=0.0)
    assert [r["uri"] for r in report["recordings"]] == sorted(c.uri for c in convs)
    assert sorted((r["uri"], r["ref_speakers"], r["hyp_speakers"]) for r in report["recordings"]) == \
        sorted((c.uri, len(c.speakers), len(c.speakers)) for c in convs)
    total = report["total"]
    pauses = sum((s.end_s - s.start_s) - sum(b - a for a, b in s.speech) for c in convs for s in c.segments)
    d = total["diarization"]
    assert d["missed_s"] == pytest.approx(0, abs=1e-6) and d["confusion_s"] == pytest.approx(0, abs=1e-6)
    assert d["false_alarm_s"] == pytest.approx(pauses, abs=1e-3) and pauses > 1.0
    assert total["transcript"]["wer"] == 0 and total["transcript"]["cer"] == 0
    assert total["turns"]["f1"] == 1.0 and total["turns"]["n_ref"] >= 15
    assert total["turns"]["mean_abs_gap_error_s"] == pytest.approx(0, abs=1e-6)
    # the default ±0.25 s collar hides those short pauses
    assert evaluate(str(tmp_path / "corpus"), os.path.join(out_dir, "refs"))["total"]["diarization"]["der"] < 0.01


def test_rttm_only_reference_and_the_builds_segment_settings(tmp_path):
    from catalog.schema import Build

    from pipelines.evaluate import format_report

    refs, out = tmp_path / "refs", tmp_path / "corpus"
    os.makedirs(refs)
    (refs / "all.rttm").write_text("".join(f"SPEAKER trip_ep1 1 {a} {b - a} <NA> <NA> {s} <NA> <NA>\n"
                                           for s, a, b, _ in REF_LINES))
    write_corpus(str(out), [conversation(recording("local", "abc", "/data/trip_ep1.wav", 16.0), REF_LINES)])
    # The build record says same-speaker pauses up to 0.1 s merge: the reference's turns use that too.
    manifest = {"source": "local", "pipeline": {"segment": {"merge_pause_s": 0.1}}}
    build = Build("b1", "v-test", None, "committed", "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00",
                  ["local"], json.dumps(manifest), "h", "0.1.0", "{}")
    write_table(Store(str(out)), "catalog/builds/b1.parquet", Build, to_arrow(Build, [build]))
    report = evaluate(str(out), str(refs))
    assert report["segment_config"]["merge_pause_s"] == 0.1
    (row,) = report["recordings"]
    assert row["transcript"] is None and report["total"]["transcript"] is None
    assert row["diarization"]["der"] == 0 and row["turns"]["n_ref"] == 3
    total_line = format_report(report).splitlines()[-2]
    assert total_line.startswith("TOTAL") and total_line.split()[1:6] == ["100.0%", "ok", "0.0%", "0.0%", "0.0%"]
