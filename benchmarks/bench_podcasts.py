"""One-microphone conversations: the pipeline end to end against the sequential loop a user would
write without this project, on the same files, side by side.

    .venv/bin/python -m benchmarks.bench_podcasts [--minutes 6] [--runs 1] [--skip-ray] [--also-beam1] [--out DIR]

Setup (not timed): labelled espeak-ng conversations from stages.sources.demo.conversations (the
standard test set, 4 files, 115 s, plus two-speaker conversations made from the demo's topic
scripts until --minutes of audio), mono 16 kHz WAVs copied into one folder.

Timed, each in its own process, wall clock from the outside:

- sequential: faster-whisper `WhisperModel(whisper-base, cpu, int8).transcribe(path,
  vad_filter=True, word_timestamps=True)` (the generator consumed), then the project's offline
  diarizer on the file decoded to 16 kHz mono, file after file, models loaded once
  (`--also-beam1`: again with beam_size=1, the pipeline's decode setting);
- pipeline, ray: `python -m pipelines.build --source local --input DIR --lang en --out NEW
  --num-cpus 2` (local Ray, one recording actor per CPU), then the same command again on the
  same output (an incremental rerun that finds nothing new); then Ray alone (start, an empty
  map over a pool of 2 actors, stop);
- pipeline, inline: the same build with `--engine inline` (one process), its stages timed.

The pipeline does more than the loop: standardization (two ffmpeg passes: EBU R128 loudness, then
24 kHz FLAC + a 16 kHz analysis view), language ID over the allowed languages, word alignment to
speakers, turns and pairs, three kinds of shards, the Parquet catalog and the build record.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

from benchmarks.common import machine, spread

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CPUS = 2
# (host, guest) voices of the extra conversations, cycled; every pair differs in variant and pitch.
VOICE_PAIRS = (("linda", "dave"), ("susan", "tom"), ("karen", "mike"), ("maria", "andy"),
               ("linda", "mike"), ("susan", "dave"))


# --- conversations ------------------------------------------------------------------------------


def topic_spec(index: int):
    """A two-speaker podcast-style conversation from one of the demo's topic scripts."""
    from stages.sources.demo.fisher_calls import TOPICS, parse_script, spoken_text, transcript_text
    from stages.sources.demo.conversations import ConversationSpec, LineSpec, SpeakerSpec, voice

    topic_id, title, script = TOPICS[index % len(TOPICS)]
    host, guest = VOICE_PAIRS[index % len(VOICE_PAIRS)]
    rng = random.Random(f"bench-podcasts:{index}")
    label = {"x": "host", "y": "guest"}
    lines = []
    for line in parse_script(script, {"x": host, "y": guest}):
        text = " ".join(transcript_text(u) for u in line.utterances)
        spoken = " ".join(spoken_text(u) for u in line.utterances)
        gap = -0.5 if line.interrupt and lines else round(rng.uniform(0.3, 1.1), 2)
        lines.append(LineSpec(label[line.side], text, gap, False, spoken))
    return ConversationSpec(
        uri=f"bench_{topic_id.lower()}_{index:02d}", title=f"{title} ({host} and {guest})",
        speakers=(SpeakerSpec("host", voice(host)), SpeakerSpec("guest", voice(guest))), lines=tuple(lines),
    )


def make_conversations(root: str, minutes: float) -> list[Any]:
    """The standard test set, then topic conversations until `minutes` of audio."""
    from stages.sources.demo.conversations import make_conversation, standard_test_set

    convs = list(standard_test_set(root))
    index = 0
    while sum(c.duration_s for c in convs) < minutes * 60:
        convs.append(make_conversation(root, topic_spec(index), seed=index))
        index += 1
    return convs


# --- children: the sequential loop, and builds ----------------------------------------------------


def sequential_child(list_path: str, result_path: str, beam_size: Optional[int] = None) -> None:
    """The loop a user writes: transcribe, then diarize, file by file, models loaded once.
    `beam_size`: None keeps faster-whisper's default (5)."""
    t0 = time.perf_counter()
    from faster_whisper import WhisperModel

    from stages.audio.load import decode_file
    from stages.config import DiarizeConfig
    from stages.analysis.diarize import make_diarizer
    from stages.analysis.diarize.base import mono_16k
    from stages.analysis.whisper_model import resolve_whisper_model

    t1 = time.perf_counter()
    model = WhisperModel(resolve_whisper_model("whisper-base"), device="cpu", compute_type="int8")
    diarizer = make_diarizer(DiarizeConfig(backend="offline"))
    t2 = time.perf_counter()
    with open(list_path) as f:
        paths = json.load(f)
    asr_s = diar_s = 0.0
    files = []
    for path in paths:
        a = time.perf_counter()
        options = {} if beam_size is None else {"beam_size": beam_size}
        segments, info = model.transcribe(path, vad_filter=True, word_timestamps=True, **options)
        words = sum(len(s.words or []) for s in segments)
        b = time.perf_counter()
        decoded = decode_file(path)
        turns = diarizer(mono_16k(decoded.samples, decoded.sample_rate)[None, :], 16000)
        c = time.perf_counter()
        asr_s, diar_s = asr_s + b - a, diar_s + c - b
        files.append({"file": os.path.basename(path), "lang": info.language, "words": words,
                      "speakers": len({t.speaker for t in turns}), "asr_s": b - a, "diarize_s": c - b})
    with open(result_path, "w") as f:
        json.dump({"imports": t1 - t0, "load_models": t2 - t1, "asr": asr_s, "diarize": diar_s,
                   "files": files}, f)


class _Noop:
    """A recording worker that does nothing: what Ray costs before any work."""

    def __call__(self, item: Any) -> Any:
        return item


def ray_child(result_path: str) -> None:
    """Time the build's Ray engine alone: start, an empty map over a pool of NUM_CPUS actors, stop."""
    t0 = time.perf_counter()
    from pipelines.config import EngineConfig
    from pipelines.engine import RayEngine

    t1 = time.perf_counter()
    engine = RayEngine(EngineConfig(kind="ray", num_cpus=NUM_CPUS))
    t2 = time.perf_counter()
    assert list(engine.map(_Noop, (), list(range(NUM_CPUS)), 1.0)) == list(range(NUM_CPUS))
    t3 = time.perf_counter()
    engine.shutdown()
    t4 = time.perf_counter()
    with open(result_path, "w") as f:
        json.dump({"imports": t1 - t0, "init": t2 - t1, "empty_map": t3 - t2, "shutdown": t4 - t3}, f)


class _Timers:
    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attr, timed)


STAGE_TIMERS = (  # (module, owner, attribute, name); all run inside "per recording" or "shards"
    ("pipelines.process", None, "RecordingProcessor.__call__", "per recording, all of it"),
    ("pipelines.process", None, "standardize_file", "  standardize (ffmpeg x2: loudness, FLAC + 16 kHz)"),
    ("stages.analysis.analyzer", "ConversationAnalyzer", "__init__", "  load models (Whisper, Silero, encoder)"),
    ("stages.analysis.vad", "SileroVAD", "__call__", "  VAD (Silero)"),
    ("stages.analysis.diarize.offline", "OfflineDiarizer", "__call__", "  diarize (offline)"),
    ("stages.analysis.asr", "WhisperASR", "language_probs", "  ASR: language ID"),
    ("stages.analysis.asr", "WhisperASR", "_decode", "  ASR: batched decode"),
    ("stages.analysis.align", None, "align_words", "  align words to speakers"),
    ("pipelines.process", "RecordingProcessor", "_segment", "  turns, pairs, samples planned"),
    ("pipelines.process", None, "ShardProcessor.__call__", "shards (cut, FLAC, tar)"),
)


def build_child(timings_path: str, argv: list[str]) -> int:
    """`python -m pipelines.build argv` with the stage timers of STAGE_TIMERS (inline engine)."""
    import importlib

    timers = _Timers()
    for module, owner, attr, name in STAGE_TIMERS:
        obj: Any = importlib.import_module(module)
        if owner:
            obj = getattr(obj, owner)
        while "." in attr:
            head, attr = attr.split(".", 1)
            obj = getattr(obj, head)
        timers.wrap(obj, attr, name)
    from pipelines.build import main as build_main

    rc = build_main(argv)
    with open(timings_path, "w") as f:
        json.dump({"spent": timers.spent, "calls": timers.calls}, f)
    return rc


# --- running the variants -----------------------------------------------------------------------


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_timed(cmd: list[str], log_path: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of reaped children, stderr+stdout) of one child process."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    cpu0 = _cpu_children()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _cpu_children() - cpu0
    out = proc.stdout + proc.stderr
    with open(log_path, "w") as f:
        f.write(out)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}; log: {log_path}\n{out[-3000:]}")
    return wall, cpu, out


def _clock(text: str) -> float:
    h, m, s = (int(x) for x in text.split(":"))
    return 3600 * h + 60 * m + s


def parse_build_output(out: str) -> dict[str, Any]:
    """The build's own timings from its progress lines and summary (seconds)."""
    got: dict[str, Any] = {}
    for stage in ("ingest", "shards"):
        m = re.search(rf"^{stage}\s.*?\d+/\d+\s+(\d+:\d\d:\d\d)", out, re.M)
        got[f"{stage}_s"] = _clock(m.group(1)) if m else 0.0
    m = re.search(r"elapsed\s*\W\s*([\d.]+)s", out)
    got["elapsed"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"corpus (\S+) \((\w+)\)", out)
    got["status"] = m.group(2) if m else "?"
    return got


def build_counts(out_dir: str) -> dict[str, int]:
    records = sorted(os.listdir(os.path.join(out_dir, "builds")))
    with open(os.path.join(out_dir, "builds", [r for r in records if r.endswith(".json")][-1])) as f:
        return json.loads(json.load(f)["counts_json"])["new"]


def run_sequential(root: str, paths: list[str], tag: str, beam_size: Optional[int] = None) -> dict[str, Any]:
    list_path, result_path = os.path.join(root, "files.json"), os.path.join(root, f"seq-{tag}.json")
    with open(list_path, "w") as f:
        json.dump(paths, f)
    cmd = [sys.executable, "-m", "benchmarks.bench_podcasts", "--sequential-child", list_path, result_path]
    if beam_size is not None:
        cmd += ["--beam-size", str(beam_size)]
    wall, cpu, _ = run_timed(cmd, os.path.join(root, f"seq-{tag}.log"))
    with open(result_path) as f:
        return {"wall": wall, "cpu": cpu, **json.load(f)}


def run_ray_alone(root: str, tag: str) -> dict[str, Any]:
    result_path = os.path.join(root, f"ray-{tag}.json")
    cmd = [sys.executable, "-m", "benchmarks.bench_podcasts", "--ray-child", result_path]
    wall, _, _ = run_timed(cmd, os.path.join(root, f"ray-{tag}.log"))
    with open(result_path) as f:
        return {"wall": wall, **json.load(f)}


def run_build(root: str, input_dir: str, engine: str, tag: str, out_dir: Optional[str] = None) -> dict[str, Any]:
    out_dir = out_dir or os.path.join(root, "corpora", f"{engine}-{tag}")
    argv = ["--source", "local", "--input", input_dir, "--lang", "en", "--out", out_dir]
    argv += ["--num-cpus", str(NUM_CPUS)] if engine == "ray" else ["--engine", "inline"]
    timings = os.path.join(root, f"timings-{engine}-{tag}.json") if engine == "inline" else None
    if timings:
        cmd = [sys.executable, "-m", "benchmarks.bench_podcasts", "--build-child", timings, "--", *argv]
    else:
        cmd = [sys.executable, "-m", "pipelines.build", *argv]
    wall, cpu, out = run_timed(cmd, os.path.join(root, f"build-{engine}-{tag}.log"))
    res = {"wall": wall, "cpu": cpu, "out_dir": out_dir, **parse_build_output(out), **build_counts(out_dir)}
    if timings:
        with open(timings) as f:
            res["stages"] = json.load(f)
    return res


# --- report ---------------------------------------------------------------------------------------


_Get = Callable[[dict], float]


def report(runs: list[dict[str, Any]], audio_s: float, skip_ray: bool, beam1: bool = False) -> None:
    n = len(runs)
    seq = lambda r: r["seq"]["wall"]  # noqa: E731
    rows: list[tuple[str, _Get, Optional[_Get], Optional[_Get]]] = [
        ("sequential loop (fw transcribe + diarize)", seq, lambda r: r["seq"]["cpu"], None),
    ]
    if beam1:
        rows.append(("  same loop, transcribe(beam_size=1)", lambda r: r["seq1"]["wall"],
                     lambda r: r["seq1"]["cpu"], None))
    if not skip_ray:
        rows += [
            (f"pipeline, ray (--num-cpus {NUM_CPUS})", lambda r: r["ray"]["wall"], lambda r: r["ray"]["cpu"],
             lambda r: r["ray"]["elapsed"]),
            ("  ray: ingest + shards stages only", lambda r: r["ray"]["ingest_s"] + r["ray"]["shards_s"], None, None),
            ("  Ray alone: start, empty 2-actor map, stop", lambda r: r["ray_alone"]["wall"], None, None),
            ("  ray: rerun, nothing new (unchanged)", lambda r: r["rerun"]["wall"], lambda r: r["rerun"]["cpu"],
             lambda r: r["rerun"]["elapsed"]),
        ]
    rows += [
        ("pipeline, inline (one process)", lambda r: r["inline"]["wall"], lambda r: r["inline"]["cpu"],
         lambda r: r["inline"]["elapsed"]),
        ("  inline: ingest + shards stages only", lambda r: r["inline"]["ingest_s"] + r["inline"]["shards_s"],
         None, None),
    ]
    print()
    print(f"{audio_s:.1f} s of audio ({audio_s / 60:.1f} min); "
          f"{'median (min-max) of ' + str(n) + ' runs' if n > 1 else '1 run'}; "
          f"RTF = wall / audio; seq/x = sequential wall / this wall (> 1: faster than the loop)")
    w = 8 if n == 1 else 22  # a column holds "median (min-max)" when there are several runs
    print(f"{'':44}{'audio s':>8}{'wall s':>{w}}{'RTF':>{w}}{'seq/x':>{w}}{'build says':>{w + 3}}{'CPU s':>7}")
    for label, wall, cpu, elapsed in rows:
        walls = [wall(r) for r in runs]
        rtfs = [x / audio_s for x in walls]
        # Ray alone and a rerun do not process the audio: their RTF and ratio would mean nothing.
        whole = not label.startswith(("  Ray alone", "  ray: rerun"))
        ratio = spread([seq(r) / wall(r) for r in runs], ".2f") if whole else ""
        rtf = spread(rtfs, ".3f") if whole else ""
        el = spread([elapsed(r) for r in runs], ".1f") if elapsed else ""
        cp = f"{statistics.median(cpu(r) for r in runs):.0f}" if cpu else ""
        print(f"{label:44}{audio_s:>8.1f}{spread(walls, '.1f'):>{w}}{rtf:>{w}}{ratio:>{w}}{el:>{w + 3}}{cp:>7}")
    print("(wall: subprocess wall clock, interpreter start included; 'build says': the build's own summary "
          "elapsed;\n stage rows: the build's progress clocks, whole seconds; CPU s: user+sys of reaped child "
          "processes - for\n ray it misses the actor processes Ray does not reap through the driver)")

    last = runs[-1]
    s = last["seq"]
    print()
    for key, label in (("seq", "sequential loop"), ("seq1", "sequential loop, beam 1")):
        if key in last:
            q = last[key]
            print(f"{label}, where its time goes (last run, s): imports {q['imports']:.1f}, load models "
                  f"{q['load_models']:.1f}, transcribe {q['asr']:.1f}, diarize (decode + offline) {q['diarize']:.1f}, "
                  f"rest {q['wall'] - q['imports'] - q['load_models'] - q['asr'] - q['diarize']:.1f}")
    st = last["inline"]["stages"]
    print("pipeline, inline, where its time goes (last run, s; stage timers inside the build):")
    for _, _, _, name in STAGE_TIMERS:
        if name in st["spent"]:
            print(f"  {name:58}{st['spent'][name]:>7.1f}  ({st['calls'][name]} calls)")
    inner = st["spent"].get(STAGE_TIMERS[0][3], 0.0) + st["spent"].get(STAGE_TIMERS[-1][3], 0.0)
    print(f"  {'everything else (start, discover, catalog, commit)':58}{last['inline']['wall'] - inner:>7.1f}")
    print("build progress clocks (last run, s; 'rest': interpreter, Ray start and stop, discover, catalog, commit):")
    for key in ("inline",) + (() if skip_ray else ("ray",)):
        r = last[key]
        print(f"  {key:7} wall {r['wall']:6.1f} = ingest {r['ingest_s']:4.0f} + shards {r['shards_s']:3.0f} "
              f"+ rest {r['wall'] - r['ingest_s'] - r['shards_s']:5.1f}")
    if not skip_ray:
        print(f"  a rerun that finds nothing new (and starts no Ray) takes {last['rerun']['wall']:.1f}")
        a = last["ray_alone"]
        print(f"Ray alone (last run, s): wall {a['wall']:.1f}: imports {a['imports']:.1f}, ray.init {a['init']:.1f}, "
              f"empty map over {NUM_CPUS} actors {a['empty_map']:.1f}, shutdown {a['shutdown']:.1f}")
    c = last["inline"]
    print(f"built (inline, last run): {c['recordings']} recordings, {c['pairs']} pairs, {c['windows']} windows, "
          f"{c['codec_chunks']} codec chunks, {c['shards']} shards, {c['rejects']} rejects")
    langs = sorted({f['lang'] for f in s['files']})
    print(f"sequential loop found: {sum(f['words'] for f in s['files'])} words, languages {langs}, speakers per file "
          f"{[f['speakers'] for f in s['files']]}")
    print()
    print("Not the same work: the loop decodes with faster-whisper's defaults (beam 5, temperature fallback, its own")
    print("VAD, language from the first 30 s) and stops at words + speaker turns; the pipeline decodes batched with")
    print("beam 1 and also standardizes (loudness, 24 kHz FLAC, 16 kHz view), identifies the language among en/hi/te,")
    print("aligns words to speakers, cuts turns/pairs/windows/codec chunks into shards and writes the catalog.")


# --- main -----------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="total audio to build (the standard set is 1.9 min)")
    ap.add_argument("--runs", type=int, default=1, help="runs of every variant (medians and ranges reported)")
    ap.add_argument("--skip-ray", action="store_true", help="leave out the Ray builds")
    ap.add_argument("--out", default=None, help="working directory (default: a temporary one, removed after)")
    ap.add_argument("--also-beam1", action="store_true",
                    help="also time the loop with beam_size=1 (the pipeline's decode setting)")
    ap.add_argument("--sequential-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--beam-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build-child", help=argparse.SUPPRESS)
    ap.add_argument("--ray-child", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sequential_child:
        sequential_child(*args.sequential_child, beam_size=args.beam_size)
        return 0
    if args.ray_child:
        ray_child(args.ray_child)
        return 0
    if args.build_child:
        return build_child(args.build_child, args.rest)
    if args.runs < 1 or args.minutes <= 0:
        ap.error("--runs must be at least 1 and --minutes positive")

    tmp = None
    if args.out is None:
        tmp = tempfile.mkdtemp(prefix="bench-podcasts-")
        root = tmp
    else:
        root = os.path.abspath(args.out)
        os.makedirs(root, exist_ok=True)
    try:
        return _bench(args, root)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _bench(args: argparse.Namespace, root: str) -> int:
    print(f"bench_podcasts  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine(('faster-whisper', 'ctranslate2', 'torch', 'ray'))}")
    try:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    except OSError:
        pass
    t0 = time.perf_counter()
    convs = make_conversations(os.path.join(root, "synth"), args.minutes)
    input_dir = os.path.join(root, "input")
    shutil.rmtree(input_dir, ignore_errors=True)
    os.makedirs(input_dir)
    paths = []
    for c in convs:
        dest = os.path.join(input_dir, os.path.basename(c.audio_path))
        shutil.copyfile(c.audio_path, dest)
        paths.append(dest)
    audio_s = sum(c.duration_s for c in convs)
    print(f"setup: {len(convs)} conversations, {audio_s:.1f} s of mono 16 kHz speech "
          f"({', '.join(f'{c.duration_s:.0f}' for c in convs)} s; speakers "
          f"{[len(c.speakers) for c in convs]}), {time.perf_counter() - t0:.1f} s, not timed")

    corpora = os.path.join(root, "corpora")
    runs: list[dict[str, Any]] = []
    for r in range(args.runs):
        shutil.rmtree(corpora, ignore_errors=True)
        order = ["seq", "ray", "inline"] if not args.skip_ray else ["seq", "inline"]
        order += ["seq1"] if args.also_beam1 else []
        order = order[r % len(order):] + order[: r % len(order)]  # rotate: drift hits each variant alike
        res: dict[str, Any] = {}
        for variant in order:
            if variant == "seq":
                res["seq"] = run_sequential(root, paths, str(r))
                print(f"  run {r + 1}: sequential {res['seq']['wall']:.1f} s", flush=True)
            elif variant == "seq1":
                res["seq1"] = run_sequential(root, paths, f"{r}-beam1", beam_size=1)
                print(f"  run {r + 1}: sequential, beam 1 {res['seq1']['wall']:.1f} s", flush=True)
            elif variant == "ray":
                res["ray"] = run_build(root, input_dir, "ray", str(r))
                res["rerun"] = run_build(root, input_dir, "ray", f"{r}-rerun", res["ray"]["out_dir"])
                res["ray_alone"] = run_ray_alone(root, str(r))
                print(f"  run {r + 1}: pipeline ray {res['ray']['wall']:.1f} s (rerun {res['rerun']['wall']:.1f} s, "
                      f"{res['rerun']['status']})", flush=True)
            else:
                res["inline"] = run_build(root, input_dir, "inline", str(r))
                print(f"  run {r + 1}: pipeline inline {res['inline']['wall']:.1f} s", flush=True)
        runs.append(res)
    try:
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    except OSError:
        pass
    report(runs, audio_s, args.skip_ray, args.also_beam1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
