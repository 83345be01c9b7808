"""End-to-end builds on the synthesized Fisher-layout sample: catalog, shards, incremental
rebuilds, the build lock, and bad input turning into rejects."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import duckdb
import pytest
import soundfile as sf
import webdataset as wds
from rich.console import Console

from catalog.lock import BuildLock, BuildLockedError
from catalog.store import Store
from catalog.versions import current
from pipelines.config import load_build_config
from pipelines.progress import Reporter
from pipelines.run import run_build
from stages.corpus.shards import read_index
from stages.audio.sphere import write_sphere


def build(root, out, *overrides, engine="inline", source="fisher"):
    cfg = load_build_config(
        source=source,
        out=str(out),
        source_options={"audio": [str(root)], "transcripts": [str(root)]},
        overrides=["shard.target_shard_mb=0.5", "shard.window_s=20", *overrides],
        engine={"kind": engine, "num_cpus": 2},
    )
    return run_build(cfg, Reporter(Console(file=io.StringIO(), width=200)))


def catalog(out):
    return duckdb.connect(os.path.join(str(out), "catalog.duckdb"), read_only=True)


def test_build_produces_catalog_and_shards(demo_copy, tmp_path):
    out = tmp_path / "corpus"
    s = build(demo_copy, out)
    assert s["status"] == "committed"
    assert s["new"]["recordings"] == 3 and s["totals"]["recordings"] == 3
    assert s["new"]["pairs"] > 5 and s["new"]["shards"] >= 3

    con = catalog(out)
    langs = con.execute("select lang, count(*), sum(ai_duration_s) from pairs group by all").fetchall()
    assert langs[0][0] == "en" and langs[0][1] == s["new"]["pairs"] and langs[0][2] > 0
    rec = con.execute("select native_sample_rate, sample_rate, bandwidth, num_channels, encoding from recordings").fetchall()
    assert set(rec) == {(8000, 24000, "narrowband", 2, rec[0][4])}
    assert con.execute("select count(*) from turns where is_backchannel").fetchone()[0] >= 1
    assert con.execute("select count(*) from turns where gap_s < 0").fetchone()[0] >= 1
    assert con.execute("select count(*) from pairs where shard is null").fetchone()[0] == 0
    assert con.execute("select status, version from builds").fetchall() == [("committed", s["version"])]
    speakers = con.execute("select distinct gender from speakers").fetchall()
    assert speakers and all(g[0] in ("male", "female") for g in speakers)

    index = read_index(Store(str(out)), f"shards/{s['version']}/index.json")
    kinds = {sh.kind for sh in index}
    assert kinds == {"pairs", "dialogues", "codec"}
    pair_shards = [os.path.join(out, sh.path) for sh in index if sh.kind == "pairs"]
    samples = list(wds.WebDataset(pair_shards, shardshuffle=False))
    assert len(samples) == s["new"]["pairs"]
    first = samples[0]
    meta = json.loads(first["json"])
    user, sr = sf.read(io.BytesIO(first["user.flac"]))
    # user.flac is the user turn with its margins (segment.clip_pad_s), recorded in the json.
    clip_s = meta["user_clip_end_s"] - meta["user_clip_start_s"]
    assert meta["user_clip_start_s"] <= meta["user_start_s"] and clip_s >= meta["user_duration_s"]
    assert sr == 24000 and abs(len(user) / sr - clip_s) < 0.05
    assert meta["shard"] in [sh.path for sh in index]
    windows = list(wds.WebDataset([os.path.join(out, sh.path) for sh in index if sh.kind == "dialogues"], shardshuffle=False))
    audio, _ = sf.read(io.BytesIO(windows[0]["flac"]))
    assert audio.shape == (20 * 24000, 2)


def test_rerun_is_a_no_op_and_new_recordings_only_process_themselves(demo_copy, tmp_path):
    out = tmp_path / "corpus"
    held_back = sorted((demo_copy).rglob("*.sph"))[-1]
    stash = tmp_path / held_back.name
    shutil.move(held_back, stash)
    first = build(demo_copy, out)
    assert first["new"]["recordings"] == 2
    assert first["rejects_by_reason"] == {"transcript_without_audio": 1} or "transcript_without_audio" in first["rejects_by_reason"]

    again = build(demo_copy, out)
    assert again["status"] == "unchanged" and again["version"] == first["version"]

    shutil.move(stash, held_back)
    third = build(demo_copy, out)
    assert third["status"] == "committed"
    assert third["new"]["recordings"] == 1 and third["totals"]["recordings"] == 3
    con = catalog(out)
    assert con.execute("select count(distinct recording_id) from pairs").fetchone()[0] == 3
    assert con.execute("select count(*) - count(distinct pair_id) from pairs").fetchone()[0] == 0
    assert "transcript_without_audio" not in third["rejects_by_reason"]


def test_changed_segment_config_reprocesses_only_what_depends_on_it(demo_copy, tmp_path):
    out = tmp_path / "corpus"
    first = build(demo_copy, out, "segment.context_turns=1")
    conv_cache = sorted((out / "work" / "conversations").glob("*.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in conv_cache}
    second = build(demo_copy, out, "segment.context_turns=3")
    assert second["status"] == "committed" and second["version"] != first["version"]
    assert {p: p.stat().st_mtime_ns for p in conv_cache} == mtimes  # ingest was not redone
    con = catalog(out)
    assert con.execute("select max(len(context_turn_ids)) from pairs").fetchone()[0] == 3
    assert con.execute("select count(*) from recordings").fetchone()[0] == 3


def test_second_build_on_same_output_refuses(demo_copy, tmp_path):
    out = tmp_path / "corpus"
    store = Store(str(out))
    with BuildLock(store):
        with pytest.raises(BuildLockedError, match="another build is running"):
            build(demo_copy, out)
    assert current(store) is None


def test_bad_input_becomes_rejects_and_the_build_completes(demo_copy, tmp_path):
    import numpy as np

    from stages.audio.sphere import sphere_header_bytes

    sph = sorted(demo_copy.rglob("*.sph"))
    txt = sorted(demo_copy.rglob("fe_03_*.txt"))
    audio_dir, text_dir = sph[0].parent, txt[0].parent
    tone = (np.sin(np.arange(8000 * 4) * 0.05) * 8000).astype("int16")

    def add_call(number, write_audio, transcript):
        if write_audio:
            write_audio(str(audio_dir / f"fe_03_{number}.sph"))
        if transcript is not None:
            (text_dir / f"fe_03_{number}.txt").write_text(transcript)

    ok_lines = "0.50 1.50 A: hello there\n1.80 3.00 B: hi how are you\n"
    # truncated SPHERE: a third of the file is gone
    data = sph[0].read_bytes()
    sph[0].write_bytes(data[: len(data) // 3])
    # a header that lies about its length: claims half the samples that are there
    body = sph[1].read_bytes()[1024:]
    frames = len(body) // 2
    sph[1].write_bytes(sphere_header_bytes(2, frames // 2, 8000, coding="ulaw") + body)
    # corrupt header, missing channel, audio without transcript, transcript without audio
    add_call("99001", lambda p: open(p, "wb").write(b"NIST_1A\n garbage that is not a header" * 10), ok_lines)
    add_call("99002", lambda p: write_sphere(p, tone[None, :], 8000), ok_lines)
    add_call("99003", lambda p: write_sphere(p, np.stack([tone, tone[::-1]]), 8000), None)
    add_call("99004", None, ok_lines)
    # malformed lines and a line past the end of the audio, in an otherwise good call
    with open(txt[2], "a") as f:
        f.write("not a transcript line\n12.0 A: missing end time\n9000.00 9001.00 B: far past the end\n")
    # a conversation with nothing in it
    add_call("99005", lambda p: write_sphere(p, np.stack([tone, tone[::-1]]), 8000), "# empty\n\n")

    out = tmp_path / "corpus"
    s = build(demo_copy, out)
    reasons = s["rejects_by_reason"]
    assert reasons.get("sphere_truncated") == 1
    assert reasons.get("sphere_length_mismatch") == 1
    assert reasons.get("sphere_bad_header") == 1
    assert reasons.get("missing_channel") == 1
    assert reasons.get("audio_without_transcript") == 1
    assert reasons.get("transcript_without_audio") == 1
    assert reasons.get("transcript_malformed_line") == 2
    assert reasons.get("utterance_past_audio_end") == 1
    assert reasons.get("empty_conversation") == 1
    assert s["totals"]["recordings"] == 1 and s["totals"]["pairs"] > 0  # the one good call
    con = catalog(out)
    rows = con.execute("select stage, item_id, detail from rejects where reason = 'sphere_truncated'").fetchall()
    assert rows[0][1].endswith(sph[0].stem) and rows[0][2]
    assert con.execute("select count(*) from rejects where detail = '' or detail is null").fetchone()[0] == 0


def test_duckdb_cli_reads_the_catalog(demo_copy, tmp_path):
    out = tmp_path / "corpus"
    s = build(demo_copy, out)
    cli = os.path.join(os.path.dirname(sys.executable), "duckdb")
    proc = subprocess.run([cli, "-csv", str(out / "catalog.duckdb"), "select lang, count(*) from pairs group by all"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[1] == f"en,{s['totals']['pairs']}"


def test_span_reads_cut_the_same_samples_as_whole_reads(demo_copy, tmp_path, monkeypatch):
    """Long recordings are cut from stretches read once per shard job instead of read whole; the
    shards must not differ, whether the stretches hold many samples or one each."""
    import pipelines.process as process
    from tests.pipelines.test_build_resume import _shard_files

    build(demo_copy, tmp_path / "whole")
    for max_read_s in (20.0, 0.0):
        monkeypatch.setattr(process, "MAX_READ_S", max_read_s)
        build(demo_copy, tmp_path / f"stretches-{max_read_s}")
        assert _shard_files(tmp_path / f"stretches-{max_read_s}") == _shard_files(tmp_path / "whole")


def test_stretches_cover_every_span_and_stay_bounded():
    from pipelines.process import _stretches

    spans = [(0.0, 4.0), (3.0, 9.0), (30.0, 31.0), (8.0, 12.0), (100.0, 140.0)]
    stretches = _stretches(spans, 15.0)
    assert stretches == [(0.0, 12.0), (30.0, 31.0), (100.0, 140.0)]
    for s, e in spans:
        assert any(a <= s and e <= b for a, b in stretches)
