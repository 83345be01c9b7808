"""One-microphone conversations end to end: a feed served on loopback → download → VAD →
diarization → ASR → alignment → turns, pairs and shards; bad episodes become rejects; the
evaluation command scores the build against the references."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from pipelines.config import load_build_config
from pipelines.evaluate import evaluate
from pipelines.progress import Reporter
from pipelines.run import run_build
from stages.sources.demo.loopback import serve_directory
from stages.sources.demo.conversations import standard_test_set
from tests.conftest import _free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    conversations = [c for c in standard_test_set(str(root)) if c.uri in ("synth_two_clean", "synth_panel_three")]
    return root, conversations


def _write_bad_episodes(site) -> dict[str, str]:
    audio = site / "audio"
    (audio / "empty.mp3").write_bytes(b"")
    (audio / "notes.mp3").write_text("this is a text file, not audio\n" * 50)
    sf.write(audio / "silence.wav", np.zeros(16000 * 8, dtype=np.float32), 16000)
    t = np.arange(16000 * 8) / 16000
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) * 0.15
    sf.write(audio / "music.wav", chord.astype(np.float32), 16000)
    wav = audio / "spanish.wav"
    subprocess.run(["espeak-ng", "-v", "es", "-w", str(wav),
                    "Buenos días a todos, hoy hablamos de la comida de la ciudad y de los mercados del barrio."],
                   check=True, capture_output=True)
    return {"empty": "empty.mp3", "notes": "notes.mp3", "silence": "silence.wav", "music": "music.wav",
            "spanish": "spanish.wav", "missing": "missing.wav"}


def _feed(base_url, files: dict[str, str]) -> str:
    items = []
    for i, (guid, name) in enumerate(sorted(files.items())):
        kind = "audio/mpeg" if name.endswith(".mp3") else "audio/wav"
        items.append(
            f"<item><title>{guid}</title><guid>{guid}</guid>"
            f"<pubDate>Mon, 0{i + 1} Jun 2026 10:00:00 GMT</pubDate>"
            f'<enclosure url="{base_url}/audio/{name}" type="{kind}" length="1"/></item>'
        )
    return ('<?xml version="1.0"?><rss version="2.0"><channel><title>test show</title>'
            + "".join(items) + "</channel></rss>")


def _build(feed_url, out, download_dir, engine="inline"):
    cfg = load_build_config(
        source="podcasts",
        out=str(out),
        source_options={
            "feeds": [{"url": feed_url, "lang": "en", "license": "CC0-1.0", "roles": "host_first"}],
            "download_dir": str(download_dir),
            "fetch": {"rate_limit_per_s": 0, "retries": 0, "allow_private_hosts": True},
        },
        overrides=["shard.target_shard_mb=1", "analyze.asr.languages=[en, hi, te]"],
        engine={"kind": engine, "num_cpus": 2},
    )
    return run_build(cfg, Reporter(Console(file=io.StringIO(), width=200)))


def test_podcast_feed_builds_pairs_and_rejects_bad_episodes(labelled, tmp_path):
    root, conversations = labelled
    site = tmp_path / "site"
    shutil.copytree(root / "audio", site / "audio")
    files = {c.uri: f"{c.uri}.wav" for c in conversations}
    files.update(_write_bad_episodes(site))
    out = tmp_path / "corpus"
    port = _free_port()  # the same feed URL both times, as a real feed has
    with serve_directory(str(site), port) as base:
        (site / "feed.xml").write_text(_feed(base, files))
        summary = _build(f"{base}/feed.xml", out, tmp_path / "downloads")

    reasons = summary["rejects_by_reason"]
    assert reasons.get("episode_not_found") == 1
    assert reasons.get("audio_empty") == 1
    assert reasons.get("audio_decode_failed") == 1
    assert reasons.get("no_speech") == 2  # silence and music
    assert reasons.get("unsupported_language") == 1
    assert summary["totals"]["recordings"] == 2 and summary["totals"]["pairs"] >= 8

    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    speakers = dict(con.execute(
        "select r.origin, count(*) from recordings r join speakers s using (recording_id) group by all").fetchall())
    assert sorted(speakers.values()) == [2, 3]
    assert con.execute("select count(*) from recordings where origin not like 'http://127.0.0.1:%'").fetchone()[0] == 0
    roles = {r for (r,) in con.execute("select distinct role from speakers").fetchall()}
    assert roles == {"host", "guest"}
    words = con.execute("select count(*), sum(len(words)) from utterances").fetchone()
    assert words[1] > words[0] > 0
    assert con.execute("select count(*) from turns where is_floor_transfer").fetchone()[0] >= 8

    report = evaluate(str(out), str(root / "refs"), collar=0.25, tolerance_s=0.5, skip_overlap=False)
    total = report["total"]
    assert total["recordings"] == 2
    assert total["diarization"]["der"] < 0.15, total
    assert total["transcript"]["wer"] < 0.35, total
    assert total["turns"]["f1"] >= 0.7, total

    # A scheduled rebuild finds nothing new: no download, no analysis.
    with serve_directory(str(site), port) as base:
        again = _build(f"{base}/feed.xml", out, tmp_path / "downloads")
    assert again["status"] == "unchanged" and again["new"]["recordings"] == 0


def test_local_folder_one_speaker_and_a_bad_file(labelled, tmp_path):
    root, _ = labelled
    one = [c for c in standard_test_set(str(root)) if c.uri == "synth_one_speaker"][0]
    folder = tmp_path / "recordings" / "nested"
    folder.mkdir(parents=True)
    shutil.copy(root / "audio" / f"{one.uri}.wav", folder / "monologue.wav")
    # dots in a file name must not reach recording ids (they are WebDataset keys)
    shutil.copy(root / "audio" / "synth_two_clean.wav", tmp_path / "recordings" / "two.speakers.v2.wav")
    (folder / "broken.flac").write_text("not audio")
    out = tmp_path / "corpus"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.build", "--source", "local", "--input", str(tmp_path / "recordings"),
         "--lang", "en", "--out", str(out), "--engine", "inline"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    per_file = dict(con.execute(
        "select r.origin, count(distinct s.speaker_id) from recordings r join speakers s using (recording_id) group by all"
    ).fetchall())
    assert sorted(per_file.values()) == [2]
    pairs = dict(con.execute("select recording_id, count(*) from pairs group by all").fetchall())
    assert len(pairs) == 1 and list(pairs.values())[0] >= 4  # only the two-speaker file has pairs
    assert all("." not in rid for rid in pairs)
    assert con.execute("select count(*) from shards where kind = 'pairs'").fetchone()[0] >= 1
    # The monologue is not lost silently: a reject with the diarizer's figures, in the summary too.
    rejects = dict(con.execute("select reason, detail from rejects").fetchall())
    assert sorted(rejects) == ["audio_decode_failed", "single_speaker"]
    detail = json.loads(rejects["single_speaker"])
    assert detail["speakers"] == 1 and detail["expected"] is None and "best_split_silhouette" in detail
    assert "single_speaker" in proc.stdout + proc.stderr
    build = json.loads(sorted((out / "builds").glob("*.json"))[-1].read_text())
    assert build["status"] == "committed"
    con.close()
    # Declared monologues are kept (codec data): speakers 1 in the source's settings.
    out2 = tmp_path / "corpus2"
    manifest = tmp_path / "local.yaml"
    manifest.write_text(f"source: local\nlocal:\n  audio: [{str(folder)!r}]\n  lang: en\n  speakers: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.build", "--manifest", str(manifest), "--out", str(out2), "--engine", "inline"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    con = duckdb.connect(str(out2 / "catalog.duckdb"), read_only=True)
    assert con.execute("select count(distinct speaker_id) from speakers").fetchone()[0] == 1
    assert con.execute("select reason from rejects").fetchall() == [("audio_decode_failed",)]
