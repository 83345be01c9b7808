"""Offline diarization: accuracy per condition on the easy and the hard labelled sets, and time
and peak memory per hour of audio, today's backend and the previous one side by side.

    .venv/bin/python -m benchmarks.bench_diarization [--sets easy,hard] [--hour] [--asr-words]
                     [--end-to-end] [--baseline 76b6cd5] [--work DIR] [--json FILE]

Setup (not timed): the labelled conversations of stages/sources/demo/conversations.py (easy:
four espeak-ng conversations; hard: nine with Kokoro and close espeak voices, telephone channel,
noise, fast short turns, overlaps, a four-speaker panel, one speaker on a phone line), cached in
--work. `--hour` also builds an hour-long episode: the hard two-speaker conversations repeated
with new gaps until 60 minutes (seven voices, each labelled by its voice across the hour).

Per conversation, each backend gets the 16 kHz mono mix and Silero's speech regions (the same
for both), and with `--asr-words` Whisper's word timings as hints (what a build gives it). DER
with a 0.25 s collar per side and with none, DER outside overlapped speech, JER and the speaker
count are scored against the reference RTTM (pyannote.metrics).

`--end-to-end`: each set is also built with `pipelines.build --source local` (inline, monologues
kept) and scored with `pipelines.evaluate` (DER with and without overlap, JER, speaker count,
WER, floor transfers).

Baseline: the offline backend as it was at commit --baseline (`git show` of its module, loaded
beside today's code; its interface took no hints). Time per hour of audio is the diarizer's own
wall clock (VAD excluded) over the conversations' total duration, median of --runs. Peak memory
(`--hour`): each backend diarizes the hour in a child process that reports its own VmHWM, the
audio memory-mapped as a build's analysis view is (Silero VAD and torch included).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import numpy as np

from benchmarks.common import machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000


def load_baseline(commit: str):
    """The offline diarizer module as it was at `commit`, imported under another name."""
    src = subprocess.run(["git", "-C", REPO, "show", f"{commit}:stages/analysis/diarize/offline.py"],
                         check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="bench-diar-"), "baseline_diarize_offline.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("baseline_diarize_offline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def conversations(sets: list[str], work: str) -> list[tuple[str, Any]]:
    from stages.sources.demo.conversations import hard_test_set, standard_test_set

    out = []
    if "easy" in sets:
        out += [("easy", c) for c in standard_test_set(os.path.join(work, "easy"))]
    if "hard" in sets:
        out += [("hard", c) for c in hard_test_set(os.path.join(work, "hard"))]
    return out


def hour_episode(work: str) -> tuple[str, str]:
    """(wav, rttm) of an hour-long episode: the hard set's conversations (their seven Kokoro
    voices) one after another, repeated with 1-3 s of room noise between them until 60 minutes,
    every voice labelled by its voice id so that a voice is one speaker across the hour."""
    import soundfile as sf
    from pyannote.core import Annotation, Segment

    from stages.metrics import read_rttm, write_rttm

    wav, rttm = os.path.join(work, "hour.wav"), os.path.join(work, "hour.rttm")
    if os.path.exists(wav) and os.path.exists(rttm):
        return wav, rttm
    convs = [c for _, c in conversations(["hard"], work) if "espeak" not in c.uri]
    voice_of = {}
    for c in convs:
        with open(c.timeline_path) as f:
            voice_of[c.uri] = {s["label"]: str(s["voice"]).split(":s")[0] for s in json.load(f)["speakers"]}
    rng = np.random.default_rng(0)
    ann = Annotation(uri="hour")
    t, n = 0.0, 0
    with sf.SoundFile(wav + ".tmp.wav", "w", SR, 1, "PCM_16") as out:
        while t < 3600:
            c = convs[n % len(convs)]
            x, _ = sf.read(c.audio_path, dtype="float32")
            for seg, track, lab in read_rttm(c.rttm_path)[c.uri].itertracks(yield_label=True):
                ann[Segment(t + seg.start, t + seg.end), f"{n}-{track}"] = voice_of[c.uri][lab]
            gap = rng.normal(0, 1e-3, int(rng.uniform(1, 3) * SR)).astype(np.float32)
            out.write(x)
            out.write(gap)
            t += (len(x) + len(gap)) / SR
            n += 1
    os.replace(wav + ".tmp.wav", wav)
    write_rttm({"hour": ann}, rttm)
    return wav, rttm


def score(conv, turns) -> dict[str, float]:
    from pyannote.core import Segment

    from stages.metrics import annotation_from_segments, diarization_metrics, jaccard_error_rate, read_rttm

    ref = read_rttm(conv.rttm_path)[conv.uri]
    hyp = annotation_from_segments(conv.uri, [(t.speaker, t.start_s, t.end_s) for t in turns])
    uem = Segment(0, conv.duration_s)
    return {
        "der": diarization_metrics(ref, hyp, collar=0.25, uem=uem)["der"],
        "der_nocollar": diarization_metrics(ref, hyp, collar=0.0, uem=uem)["der"],
        "der_no_overlap": diarization_metrics(ref, hyp, collar=0.25, skip_overlap=True, uem=uem)["der"],
        "jer": jaccard_error_rate(ref, hyp, collar=0.25, uem=uem),
        "ref_speakers": len(conv.speakers),
        "hyp_speakers": len({t.speaker for t in turns}),
    }


def run_sets(args, base_mod) -> list[dict[str, Any]]:
    import soundfile as sf

    from stages.config import DiarizeConfig, VadConfig
    from stages.analysis.diarize.base import DiarizeHints
    from stages.analysis.diarize.offline import OfflineDiarizer
    from stages.analysis.vad import SileroVAD

    cfg = DiarizeConfig(backend="offline", device="cpu")
    ours = OfflineDiarizer(cfg)
    base = base_mod.OfflineDiarizer(cfg) if base_mod else None
    vad = SileroVAD(VadConfig())
    asr = None
    if args.asr_words:
        from stages.analysis.asr import WhisperASR
        from stages.config import AsrConfig

        asr = WhisperASR(AsrConfig(device="cpu"))
    rows = []
    for set_name, conv in conversations(args.sets, args.work):
        audio, sr = sf.read(conv.audio_path, dtype="float32")
        speech = vad(audio, sr)
        words: tuple = ()
        if asr is not None:
            res = asr.transcribe(audio, speech, lang_hint="en")
            words = tuple((w.start_s, w.end_s) for s in res.segments for w in (s.words or []))
        row: dict[str, Any] = {"set": set_name, "uri": conv.uri, "title": conv.title, "duration_s": conv.duration_s}
        for name, fn in (("ours", lambda: ours(audio[None, :], SR, speech, DiarizeHints(words=words))),
                         ("baseline", (lambda: base(audio[None, :], SR, speech)) if base else None)):
            if fn is None:
                continue
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                turns = fn()
                times.append(time.perf_counter() - t0)
            row[name] = {**score(conv, turns), "seconds": statistics.median(times)}
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _line(row: dict[str, Any]) -> str:
    parts = [f"{row['set']:4s} {row['uri']:28s}"]
    for name in ("baseline", "ours"):
        if name in row:
            r = row[name]
            parts.append(f"{name}: {r['ref_speakers']}/{r['hyp_speakers']} spk, DER {_pct(r['der'])} "
                         f"(no collar {_pct(r['der_nocollar'])}, no ovl {_pct(r['der_no_overlap'])}), JER {_pct(r['jer'])}")
    return " | ".join(parts)


def totals(rows: list[dict[str, Any]], set_name: str, name: str) -> Optional[dict[str, float]]:
    sel = [r for r in rows if r["set"] == set_name and name in r]
    if not sel:
        return None
    return {
        "mean_der": statistics.mean(r[name]["der"] for r in sel),
        "mean_der_no_overlap": statistics.mean(r[name]["der_no_overlap"] for r in sel),
        "mean_jer": statistics.mean(r[name]["jer"] for r in sel),
        "count_accuracy": sum(r[name]["ref_speakers"] == r[name]["hyp_speakers"] for r in sel) / len(sel),
        "seconds_per_hour": sum(r[name]["seconds"] for r in sel) / sum(r["duration_s"] for r in sel) * 3600,
    }


CHILD = """
import json, re, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from stages.config import DiarizeConfig, VadConfig
from stages.analysis.vad import SileroVAD
# As a build gives it: the analysis view memory-mapped, not decoded into memory.
audio, sr = np.memmap({raw!r}, dtype=np.float32, mode="r"), 16000
speech = SileroVAD(VadConfig())(audio, sr)
if {baseline!r}:
    from benchmarks.bench_diarization import load_baseline
    mod = load_baseline({baseline!r})
else:
    import stages.analysis.diarize.offline as mod
d = mod.OfflineDiarizer(DiarizeConfig(backend="offline", device="cpu"))
t0 = time.perf_counter()
turns = d(audio[None, :], sr, speech)
sec = time.perf_counter() - t0
del audio
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
print(json.dumps({{"seconds": sec, "peak_mb": hwm, "turns": [[t.start_s, t.end_s, t.speaker] for t in turns]}}))
"""


def run_hour(args) -> dict[str, Any]:
    from pyannote.core import Segment

    from stages.metrics import annotation_from_segments, diarization_metrics, read_rttm

    import soundfile as sf

    wav, rttm = hour_episode(args.work)
    raw = wav[:-4] + ".f32"
    if not os.path.exists(raw):
        sf.read(wav, dtype="float32")[0].tofile(raw)
    ref = read_rttm(rttm)["hour"]
    out = {}
    for name, baseline in (("baseline", args.baseline), ("ours", "")):
        if name == "baseline" and not args.baseline:
            continue
        code = CHILD.format(repo=REPO, raw=raw, baseline=baseline)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=7200)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        hyp = annotation_from_segments("hour", [tuple((t[2], t[0], t[1])) for t in r["turns"]])
        end = max(s.end for s in ref.itersegments())
        r["der"] = diarization_metrics(ref, hyp, collar=0.25, uem=Segment(0, end))["der"]
        r["speakers"] = len({t[2] for t in r["turns"]})
        del r["turns"]
        out[name] = r
        print(f"hour: {name}: {r['seconds']:.0f} s, peak {r['peak_mb']} MB, DER {_pct(r['der'])}, "
              f"{r['speakers']} speakers found of {len(ref.labels())} voices", flush=True)
    return out


def end_to_end(args) -> dict[str, Any]:
    """Each set built as `--source local` (inline engine, monologues kept) and scored by
    `pipelines.evaluate`: the figures a user gets, Whisper's words and the aligner included."""
    import shutil

    from pipelines.evaluate import evaluate, format_report

    reports = {}
    for set_name in args.sets:
        convs = [c for s, c in conversations([set_name], args.work) if s == set_name]
        root = os.path.join(args.work, f"e2e-{set_name}")
        shutil.rmtree(root, ignore_errors=True)
        audio, refs = os.path.join(root, "audio"), os.path.join(root, "refs")
        os.makedirs(audio), os.makedirs(refs)
        for c in convs:
            shutil.copy(c.audio_path, audio)
            shutil.copy(c.rttm_path, refs)
            shutil.copy(c.stm_path, refs)
        out = os.path.join(root, "corpus")
        cmd = [sys.executable, "-m", "pipelines.build", "--source", "local", "--input", audio, "--lang", "en",
               "--out", out, "--engine", "inline", "--set", "analyze.diarize.single_speaker=keep"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
        report = evaluate(out, refs)
        report["build_seconds"] = time.perf_counter() - t0
        print(f"\n{set_name} set, end to end ({report['build_seconds']:.0f} s build):\n{format_report(report)}", flush=True)
        reports[set_name] = report
    return reports


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="easy,hard")
    p.add_argument("--hour", action="store_true", help="also time an hour-long episode (peak memory in a child)")
    p.add_argument("--asr-words", action="store_true", help="give the diarizer Whisper's word timings, as a build does")
    p.add_argument("--end-to-end", action="store_true",
                   help="also build each set with `pipelines.build --source local` and score it with pipelines.evaluate")
    p.add_argument("--baseline", default="76b6cd5", help="git commit of the previous backend ('' for none)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "convcorpus-bench-diarization"))
    p.add_argument("--json")
    args = p.parse_args()
    args.sets = [s for s in args.sets.split(",") if s]
    os.makedirs(args.work, exist_ok=True)
    print(machine(("torch",)))
    base_mod = load_baseline(args.baseline) if args.baseline else None
    rows = run_sets(args, base_mod) if args.sets else []
    summary = {s: {n: totals(rows, s, n) for n in ("baseline", "ours")} for s in args.sets}
    for s, by in summary.items():
        for n, t in by.items():
            if t:
                print(f"{s} {n}: mean DER {_pct(t['mean_der'])}, no overlap {_pct(t['mean_der_no_overlap'])}, "
                      f"JER {_pct(t['mean_jer'])}, count accuracy {_pct(t['count_accuracy'])}, "
                      f"{t['seconds_per_hour']:.0f} s per hour of audio")
    hour = run_hour(args) if args.hour else None
    e2e = end_to_end(args) if args.end_to_end else None
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "summary": summary, "hour": hour, "end_to_end": e2e}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
