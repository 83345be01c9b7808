"""The demo source generator: real espeak-ng synthesis, real SPHERE files decoded by ffmpeg."""
from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

from stages.sources.demo.fisher_calls import BACKCHANNELS, CALLDATA_HEADER, generate_demo_fisher
from stages.corpus.segment import is_backchannel_text
from stages.audio.sphere import read_sphere_header

LINE = re.compile(r"^(\d+\.\d{2}) (\d+\.\d{2}) ([AB]): (\S.*?) ?$")
BACKCHANNEL_TEXTS = {text for text, _ in BACKCHANNELS}


def _decode(path: str) -> np.ndarray:
    """(2, n) int16 through ffmpeg's own NIST SPHERE demuxer, at the file's native rate."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate,channels,codec_name",
         "-of", "csv=p=0", path], capture_output=True, text=True, check=True).stdout.strip()
    assert probe == "pcm_mulaw,8000,2"
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2").reshape(-1, 2).T


def _transcript(path: str) -> list[tuple[float, float, str, str]]:
    with open(path) as f:
        lines = f.read().split("\n")
    out = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"malformed transcript line {line!r}"
        out.append((float(m.group(1)), float(m.group(2)), m.group(3), m.group(4)))
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    return generate_demo_fisher(root, num_calls=2, seed=0)


def test_layout_and_calldata(demo):
    assert demo.call_ids == ("fe_03_90001", "fe_03_90002")
    for cid in demo.call_ids:
        assert demo.audio_path(cid) == os.path.join(demo.root, "fe_03_p1_sph1", "audio", "900", f"{cid}.sph")
        assert demo.transcript_path(cid) == os.path.join(
            demo.root, "fe_03_p1_tran", "data", "trans", "900", f"{cid}.txt")
        assert os.path.isfile(demo.audio_path(cid)) and os.path.isfile(demo.transcript_path(cid))
    assert demo.calldata_path == os.path.join(demo.root, "fe_03_p1_tran", "doc", "fe_03_p1_calldata.tbl")
    with open(demo.calldata_path) as f:
        rows = f.read().splitlines()
    assert rows[0] == CALLDATA_HEADER
    assert len(rows) == 3
    for row, cid in zip(rows[1:], demo.call_ids):
        cols = row.split(",")
        assert len(cols) == 15 and cols[0] == cid
        assert re.fullmatch(r"\d{8}_\d{6}", cols[1]) and re.fullmatch(r"ENG\d\d", cols[2])
        assert cols[5].isdigit() and cols[10].isdigit() and cols[5] != cols[10]
        assert cols[6] in ("f.a", "m.a") and cols[11] in ("f.a", "m.a")


def test_sphere_header_and_audio(demo):
    for cid in demo.call_ids:
        path = demo.audio_path(cid)
        h = read_sphere_header(path)
        assert (h.header_size, h.channel_count, h.sample_rate) == (1024, 2, 8000)
        assert (h.sample_coding, h.sample_n_bytes) == ("ulaw", 1)
        assert os.path.getsize(path) == 1024 + 2 * h.sample_count
        audio = _decode(path)
        assert audio.shape == (2, h.sample_count)
        assert 45 <= audio.shape[1] / 8000 <= 90
        # Never digital silence: a faint noise floor runs on both channels throughout.
        assert np.count_nonzero(audio[:, :4000]) > 3000


def test_transcripts_match_audio(demo):
    for cid in demo.call_ids:
        with open(demo.transcript_path(cid)) as f:
            assert f.readline() == f"# {cid}.sph\n"
        utts = _transcript(demo.transcript_path(cid))
        audio = _decode(demo.audio_path(cid))
        duration = audio.shape[1] / 8000
        assert len(utts) >= 20
        assert [u[0] for u in utts] == sorted(u[0] for u in utts)
        assert all(0 <= s < e <= duration for s, e, _, _ in utts)
        assert any("[laughter]" in t for *_, t in utts)
        for side, ch in (("A", 0), ("B", 1)):
            own = [(s, e) for s, e, spk, _ in utts if spk == side]
            # The longest utterance is loud on its own channel.
            s, e = max(own, key=lambda u: u[1] - u[0])
            speech = _rms(audio[ch, int(s * 8000):int(e * 8000)])
            # The longest stretch of this channel at least 0.5 s from any of its utterances.
            edges = [0.0] + [x for u in sorted(own) for x in u] + [duration]
            gaps = [(a + 0.5, b - 0.5) for a, b in zip(edges[::2], edges[1::2]) if b - a > 1.5]
            qs, qe = max(gaps, key=lambda g: g[1] - g[0])
            quiet = _rms(audio[ch, int(qs * 8000):int(qe * 8000)])
            assert speech > 1000, (cid, side, speech)
            assert 0 < quiet < 100, (cid, side, quiet)
            assert 20 * np.log10(speech / quiet) > 25


def test_backchannels_overlaps_and_interruptions(demo):
    assert all(is_backchannel_text(t) for t in BACKCHANNEL_TEXTS)
    for cid in demo.call_ids:
        utts = _transcript(demo.transcript_path(cid))
        backchannels = overlaps = interruptions = 0
        for s, e, spk, text in utts:
            others = [(os_, oe, ot) for os_, oe, ospk, ot in utts if ospk != spk]
            if text in BACKCHANNEL_TEXTS and e - s <= 1.2:
                # A backchannel lies over the other side's speech.
                if any(os_ < s < oe for os_, oe, _ in others):
                    backchannels += 1
                continue
            for os_, oe, ot in others:
                if os_ < s < oe and ot not in BACKCHANNEL_TEXTS:
                    overlaps += 1
                    interruptions += oe - s >= 0.6
        assert backchannels >= 1 and overlaps >= 1 and interruptions >= 1, (cid, backchannels, overlaps)
        # A speaker continues after a short pause: same-side lines 0.1-1.0 s apart.
        same = [(b[0] - a[1]) for a, b in zip(utts, utts[1:]) if a[2] == b[2]]
        assert any(0.1 <= g <= 1.0 for g in same)
        # Floor transfers include gaps, not only overlaps.
        transfers = [b[0] - a[1] for a, b in zip(utts, utts[1:]) if a[2] != b[2]]
        assert any(0.1 <= g <= 1.5 for g in transfers)


def _snapshot(root: str) -> dict[str, tuple[bytes, int]]:
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = (f.read(), os.stat(p).st_mtime_ns)
    return out


def test_deterministic_and_idempotent(demo, tmp_path):
    before = _snapshot(demo.root)
    again = generate_demo_fisher(demo.root, num_calls=2, seed=0)
    assert again == demo
    assert _snapshot(demo.root) == before  # same bytes, same mtimes: nothing rewritten

    other = generate_demo_fisher(str(tmp_path / "other"), num_calls=2, seed=0)
    fresh = _snapshot(other.root)
    assert {k: v[0] for k, v in fresh.items()} == {k: v[0] for k, v in before.items()}
    a, b = (open(demo.audio_path(c), "rb").read() for c in demo.call_ids)
    assert a != b

    # A different request replaces the sample instead of mixing it with the old one.
    smaller = generate_demo_fisher(other.root, num_calls=1, seed=0)
    assert smaller.call_ids == ("fe_03_90001",)
    assert not os.path.exists(other.audio_path("fe_03_90002"))
    with open(smaller.calldata_path) as f:
        assert len(f.read().splitlines()) == 2


def test_refuses_foreign_fisher_folders(tmp_path):
    real = tmp_path / "fe_03_p1_sph1" / "audio" / "000"
    real.mkdir(parents=True)
    (real / "fe_03_00001.sph").write_bytes(b"NIST_1A")
    with pytest.raises(FileExistsError):
        generate_demo_fisher(str(tmp_path), num_calls=1)
    assert (real / "fe_03_00001.sph").read_bytes() == b"NIST_1A"


# ------------------------------------------------------- the demo source, synthetic dialogues


def _llama_children() -> set[int]:
    """Our child processes running llama.cpp's server."""
    me, found = os.getpid(), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and b"llama_cpp.server" in cmd:
            found.add(int(pid))
    return found


@pytest.mark.llm
def test_demo_build_has_synthetic_dialogues_in_hindi_telugu_and_english(tmp_path, monkeypatch):
    import io

    import duckdb
    from rich.console import Console

    import stages.synth.llm_server
    from pipelines.config import load_build_config
    from pipelines.progress import Reporter
    from pipelines.run import run_build
    from stages.sources.demo.source import DemoConfig, DemoSource

    options = {"num_calls": 1, "podcasts": False, "workdir": str(tmp_path / "work"), "synthetic_dialogues": 1}
    cfg = load_build_config(source="demo", out=str(tmp_path / "corpus"), source_options=options,
                            overrides=["shard.target_shard_mb=1", "shard.window_s=10", "shard.window_min_speech_s=1"],
                            engine={"kind": "inline"})
    servers_before = _llama_children()
    summary = run_build(cfg, Reporter(Console(file=io.StringIO(), width=200)))
    assert summary["status"] == "committed"
    assert _llama_children() == servers_before  # the demo stopped the server it started

    con = duckdb.connect(str(tmp_path / "corpus" / "catalog.duckdb"), read_only=True)
    # USER -> AI pairs of every language, whose AI side is the dialogue's AI speaker.
    pairs = dict(con.execute(
        "select p.lang, count(*) from pairs p join speakers s on s.speaker_id = p.ai_speaker_id "
        "where p.source = 'demo-synthetic' and s.role = 'ai' and s.label = 'AI' group by all").fetchall())
    assert set(pairs) == {"hi", "te", "en"} and min(pairs.values()) >= 1, pairs
    # Every synthetic speaker carries its espeak-ng voice id; the two sides of a dialogue differ.
    voices = con.execute(
        "select recording_id, lang, label, json_extract_string(metadata_json, '$.voice_id') from speakers "
        "where source = 'demo-synthetic' order by all").fetchall()
    assert {lang for _, lang, _, _ in voices} == {"hi", "te", "en"}
    by_recording: dict[str, dict[str, str]] = {}
    for rid, lang, label, voice in voices:
        assert voice and voice.startswith(f"espeak:{lang}+"), (rid, label, voice)
        by_recording.setdefault(rid, {})[label] = voice
    assert all(set(v) == {"USER", "AI"} and v["USER"] != v["AI"] for v in by_recording.values())
    # The script is the transcript: utterance texts in the language's writing system.
    texts = dict(con.execute("select lang, string_agg(text_raw, ' ') from utterances "
                             "where source = 'demo-synthetic' group by lang").fetchall())
    assert re.search("[\u0900-\u097F]", texts["hi"]) and re.search("[\u0C00-\u0C7F]", texts["te"])
    # A dialogue that did not make it is a reject with a reason (none expected, but never silent).
    for reason, detail in con.execute("select reason, detail from rejects where source = 'demo-synthetic'").fetchall():
        assert reason and detail

    # The dialogues are kept: the next discovery finds them and starts no server.
    def no_server(*a, **k):
        raise AssertionError("a server was started for dialogues that already exist")

    monkeypatch.setattr(stages.synth.llm_server, "start_configured", no_server)
    again = DemoSource(DemoConfig(**options)).synthetic.discover()
    assert sorted(t.recording_id for t in again.tasks) == sorted(by_recording)
