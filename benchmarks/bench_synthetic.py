"""Synthetic dialogues: LLM scripts on loopback llama.cpp servers, espeak-ng TTS and the Whisper
round trip; how many dialogues a minute, and which LLM and TTS parallelism gives the most.

    .venv/bin/python -m benchmarks.bench_synthetic [--dialogues 1] [--runs 1] [--langs hi,te,en] [--out DIR]

Setup (not timed): three llama.cpp servers (`stages.synth.llm_server`, the packaged Gemma 3 270M Q4_K_M
GGUF, 2048-token context) on 127.0.0.1: one with 2 threads, two with 1 thread each; each answers
one 1-token completion of every language's few-shot prompt first (warm-up).

Timed, per run (the same seeded requests for every variant of a run; run k uses seed k):

- **LLM scripts** (`generate_scripts` with the demo's settings: completion mode, turn by turn,
  temperature 0.8, 6 samples per turn, 4 attempts), `--dialogues` per language, under each
  LLM variant of `LLM_VARIANTS` (servers x threads, requests in flight). The first is the
  baseline. Tokens are the servers' own usage counts.
- **TTS** (`stages.synth.tts.base` espeak-ng backend, two voices per language): every turn of the scripts the
  baseline accepted, with 1, 2 and 3 worker threads (espeak-ng runs as a subprocess, so threads
  run it in parallel). RTF = synthesis seconds / audio seconds, per language from the 1-worker pass.
- **End to end** (`SyntheticSource.discover` into a fresh directory: scripts, TTS, Whisper
  round trip, timeline, WAV + JSON files, i.e. everything before the build's ordinary ingest
  and shards; the demo's settings, so only English turns are transcribed back), with the
  baseline LLM variant and with two 1-thread servers, 2 in flight (`E2E_VARIANTS`); the stages
  inside are timed. Server start-up is not included (about 3-5 s each).

Outputs differ between variants: llama.cpp's numerics depend on which prompt prefix a server had
evaluated before, so the same seeds give other samples, other retries and other turn lengths.
Ratios are taken per run against the baseline of that run, then their median is printed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import machine, spread

# (label, server group, requests in flight); the first is the baseline.
LLM_VARIANTS = (
    ("1 server x 2 threads, 1 in flight", "one2", 1),
    ("1 server x 2 threads, 2 in flight", "one2", 2),
    ("1 server x 1 thread, 1 in flight", "one1", 1),
    ("2 servers x 1 thread, 2 in flight", "two1", 2),
)
TTS_WORKERS = (1, 2, 3)
E2E_VARIANTS = (LLM_VARIANTS[0], LLM_VARIANTS[3])  # end to end: the baseline, and one server per core


def start_servers() -> dict[str, list[Any]]:
    from stages.synth.llm_server import start_llama_server

    two = start_llama_server(n_threads=2)
    ones = [start_llama_server(n_threads=1) for _ in range(2)]
    return {"one2": [two], "one1": ones[:1], "two1": ones}


def warm_up(servers: list[Any], langs: list[str]) -> None:
    """One short completion per server and language (a fresh server's first requests were slow)."""
    from stages.synth.scripts import build_prompt
    from stages.synth.llm import LlmClient, LlmConfig

    prompts = [build_prompt(r) for r in requests_for(langs, 1, seed=10_000)]
    for s in servers:
        client = LlmClient(LlmConfig(base_url=s.base_url, model=s.model, timeout_s=600))
        for p in prompts:
            client.complete(p, seed=0, max_tokens=1)


def requests_for(langs: list[str], dialogues: int, seed: int) -> list[Any]:
    from stages.sources.demo.source import DemoConfig, demo_synthetic_config
    from stages.sources.synthetic import plan_requests

    cfg = demo_synthetic_config(DemoConfig(seed=seed, synthetic_languages=langs, synthetic_dialogues=dialogues), "/unused")
    return [p.request for p in plan_requests(cfg)]


def llm_config(urls: list[str], in_flight: int) -> Any:
    from stages.sources.demo.source import DemoConfig, demo_synthetic_config

    base = demo_synthetic_config(DemoConfig(), "/unused").llm
    return base.model_copy(update={"base_urls": urls, "max_concurrency": in_flight, "timeout_s": 600.0})


def run_llm(urls: list[str], in_flight: int, requests: list[Any]) -> dict[str, Any]:
    from stages.synth.scripts import generate_scripts, reason_counts
    from stages.synth.llm import LlmClient
    from stages.sources.demo.source import DemoConfig, demo_synthetic_config

    script_cfg = demo_synthetic_config(DemoConfig(), "/unused").script
    client = LlmClient(llm_config(urls, in_flight))
    counts = {"requests": 0, "prompt": 0, "completion": 0}
    lock = threading.Lock()
    inner = client.complete_full

    def counted(*a: Any, **k: Any) -> Any:
        out = inner(*a, **k)
        with lock:
            counts["requests"] += 1
            counts["prompt"] += out.prompt_tokens or 0
            counts["completion"] += out.completion_tokens or 0
        return out

    client.complete_full = counted  # type: ignore[method-assign]
    t0 = time.perf_counter()
    scripts, rejects = generate_scripts(client, requests, cfg=script_cfg)
    wall = time.perf_counter() - t0
    return {
        "wall": wall, "asked": len(requests), "accepted": len(scripts),
        "accepted_by_lang": {lg: sum(s.lang == lg for s in scripts) for lg in sorted({r.lang for r in requests})},
        "attempts": [s.attempts for s in scripts], "reasons": reason_counts(scripts, rejects),
        **counts, "scripts": [{"lang": s.lang, "seed": s.seed, "turns": [t.text for t in s.turns]} for s in scripts],
    }


def run_tts(scripts: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    from stages.synth.tts.base import TtsConfig, assign_voices
    from stages.synth.tts import make_tts

    backend = make_tts(TtsConfig())
    jobs = []
    for s in scripts:
        voices = assign_voices(s["lang"], 2, s["seed"], backend)
        jobs += [(s["lang"], text, voices[k % 2]) for k, text in enumerate(s["turns"])]

    def one(job: tuple[str, str, Any]) -> tuple[str, float, float]:
        t = time.perf_counter()
        audio, sr = backend.synthesize(job[1], job[2])
        return job[0], time.perf_counter() - t, len(audio) / sr

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(one, jobs))
    wall = time.perf_counter() - t0
    by_lang: dict[str, list[float]] = {}
    for lang, spent, audio_s in done:
        acc = by_lang.setdefault(lang, [0.0, 0.0, 0])
        acc[0] += spent
        acc[1] += audio_s
        acc[2] += 1
    return {"wall": wall, "clips": len(jobs), "audio_s": sum(a for _, _, a in done),
            "by_lang": {k: {"synth_s": v[0], "audio_s": v[1], "clips": v[2]} for k, v in by_lang.items()}}


class _Timer:
    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t

        setattr(owner, attr, timed)


def run_e2e(urls: list[str], in_flight: int, langs: list[str], dialogues: int, seed: int, out_dir: str) -> dict[str, Any]:
    from stages.sources.demo.source import DemoConfig, demo_synthetic_config
    from stages.sources.synthetic import SyntheticSource

    cfg = demo_synthetic_config(DemoConfig(seed=seed, synthetic_languages=langs, synthetic_dialogues=dialogues), out_dir)
    cfg = cfg.model_copy(update={"llm": llm_config(urls, in_flight), "serve": None})
    src = SyntheticSource(cfg)
    timer = _Timer()
    timer.wrap(src, "_generate", "LLM scripts")
    timer.wrap(src, "_roundtrip", "Whisper round trip (model load included)")
    backend = src._backend()
    timer.wrap(backend, "synthesize", "TTS (espeak-ng)")
    t0 = time.perf_counter()
    found = src.discover()
    wall = time.perf_counter() - t0
    audio_s = 0.0
    for task in found.tasks:
        with open(task.transcript_path or "", encoding="utf-8") as f:
            audio_s += json.load(f)["timeline"]["duration_s"]
    return {"wall": wall, "dialogues": len(found.tasks), "asked": len(langs) * dialogues, "audio_s": audio_s,
            "rejects": [(r.reason, r.detail[:200]) for r in found.rejects], "stages": timer.spent}


# --- report ----------------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(results: list[dict[str, Any]], langs: list[str], dialogues: int) -> str:
    lines = []
    runs = len(results)
    asked = len(langs) * dialogues
    lines.append(f"LLM scripts: {asked} dialogues a run ({dialogues} per language: {', '.join(langs)}), 4-6 turns, "
                 f"turn by turn; median (min-max) of {runs} run(s); x base = dialogues/min over the baseline's, per run")
    lines.append(f"{'variant':40s} {'accepted':>9s} {'wall s':>20s} {'dialogues/min':>20s} {'gen tok/s':>18s} "
                 f"{'requests':>8s} {'x base':>16s}")
    for label, _, _ in LLM_VARIANTS:
        rs = [r["llm"][label] for r in results]
        dpm = [60 * x["accepted"] / x["wall"] for x in rs]
        tps = [x["completion"] / x["wall"] for x in rs]
        ratio = [60 * r["llm"][label]["accepted"] / r["llm"][label]["wall"]
                 / max(1e-9, 60 * r["llm"][LLM_VARIANTS[0][0]]["accepted"] / r["llm"][LLM_VARIANTS[0][0]]["wall"])
                 for r in results]
        acc = str(sum(x["accepted"] for x in rs))
        lines.append(f"{label:40s} {acc + '/' + str(asked * runs):>9s} {spread([x['wall'] for x in rs], '.1f'):>20s} "
                     f"{spread(dpm, '.2f'):>20s} {spread(tps, '.1f'):>18s} {int(_med([x['requests'] for x in rs])):>8d} "
                     f"{spread(ratio, '.2f'):>16s}")
    base = [r["llm"][LLM_VARIANTS[0][0]] for r in results]
    by_lang = {lg: sum(x["accepted_by_lang"].get(lg, 0) for r in results for x in r["llm"].values()) for lg in langs}
    total = runs * len(LLM_VARIANTS) * dialogues
    lines.append("accepted per language, all variants and runs: "
                 + ", ".join(f"{lg} {n}/{total}" for lg, n in by_lang.items()))
    reasons: dict[str, int] = {}
    for r in results:
        for x in r["llm"].values():
            for k, v in x["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
    lines.append(f"failed whole-dialogue attempts by reason (all variants and runs): {reasons or 'none'}")
    lines.append(f"baseline: {_med([x['prompt'] for x in base]):.0f} prompt tokens sent (most reused from the "
                 f"server's previous request), {_med([x['completion'] for x in base]):.0f} generated")
    lines.append("")
    lines.append(f"TTS, espeak-ng, every turn the baseline accepted; median of {runs} run(s)")
    lines.append(f"{'workers':>7s} {'clips':>6s} {'audio s':>8s} {'wall s':>18s} {'audio s / wall s':>18s} {'x 1 worker':>12s}")
    for w in TTS_WORKERS:
        rs = [r["tts"][str(w)] for r in results]
        speed = [x["audio_s"] / x["wall"] for x in rs]
        ratio = [r["tts"]["1"]["wall"] / r["tts"][str(w)]["wall"] for r in results]
        lines.append(f"{w:>7d} {int(_med([x['clips'] for x in rs])):>6d} {_med([x['audio_s'] for x in rs]):>8.1f} "
                     f"{spread([x['wall'] for x in rs], '.2f'):>18s} {spread(speed, '.1f'):>18s} {spread(ratio, '.2f'):>12s}")
    rtf = []
    for lg in langs:
        xs = [r["tts"]["1"]["by_lang"].get(lg) for r in results]
        xs = [x for x in xs if x and x["audio_s"] > 0]
        if xs:
            rtf.append(f"{lg} {_med([x['synth_s'] / x['audio_s'] for x in xs]):.3f} "
                       f"({sum(x['clips'] for x in xs)} clips, {sum(x['audio_s'] for x in xs):.0f} s)")
    lines.append("TTS realtime factor (synthesis s / audio s, 1 worker): " + "; ".join(rtf))
    lines.append("")
    lines.append(f"End to end (SyntheticSource.discover: scripts, TTS, Whisper round trip, timeline, files); "
                 f"{asked} dialogues a run; median of {runs} run(s)")
    lines.append(f"{'LLM variant':40s} {'dialogues':>9s} {'audio s':>8s} {'wall s':>18s} {'dialogues/min':>18s} {'x base':>12s}")
    for key in ("base", "other"):
        rs = [r["e2e"][key] for r in results]
        dpm = [60 * x["dialogues"] / x["wall"] for x in rs]
        ratio = [(r["e2e"][key]["dialogues"] / r["e2e"][key]["wall"]) / max(1e-9, r["e2e"]["base"]["dialogues"] / r["e2e"]["base"]["wall"])
                 for r in results]
        lines.append(f"{results[-1]['e2e'][key]['variant']:40s} {sum(x['dialogues'] for x in rs):>4d}/{asked * runs:<4d} "
                     f"{_med([x['audio_s'] for x in rs]):>8.1f} {spread([x['wall'] for x in rs], '.1f'):>18s} "
                     f"{spread(dpm, '.2f'):>18s} {spread(ratio, '.2f'):>12s}")
        stages = rs[-1]["stages"]
        rest = rs[-1]["wall"] - sum(stages.values())
        lines.append("    last run: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()) + f", rest {rest:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dialogues", type=int, default=1, help="per language and variant")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--langs", default="hi,te,en")
    ap.add_argument("--out", default=None, help="keep results.json and the generated dialogues here")
    args = ap.parse_args(argv)
    langs = args.langs.split(",")
    root = args.out or tempfile.mkdtemp(prefix="bench-synthetic-")
    os.makedirs(root, exist_ok=True)
    print(f"machine: {machine(('llama_cpp_python', 'openai', 'faster-whisper'))}")
    print(f"started {dt.datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()}")
    t_setup = time.perf_counter()
    servers = start_servers()
    warm_up([servers["one2"][0], *servers["two1"]], langs)
    print(f"setup: 3 llama.cpp servers started and warmed up in {time.perf_counter() - t_setup:.1f} s (not timed)",
          flush=True)
    urls = {k: [s.base_url for s in v] for k, v in servers.items()}
    results = []
    try:
        for run in range(args.runs):
            res: dict[str, Any] = {"llm": {}, "tts": {}, "e2e": {}}
            reqs = requests_for(langs, args.dialogues, seed=run)
            for label, group, in_flight in LLM_VARIANTS:
                res["llm"][label] = run_llm(urls[group], in_flight, reqs)
                x = res["llm"][label]
                print(f"run {run + 1}: {label}: {x['accepted']}/{x['asked']} in {x['wall']:.1f} s", flush=True)
            base_scripts = res["llm"][LLM_VARIANTS[0][0]]["scripts"]
            for w in TTS_WORKERS:
                res["tts"][str(w)] = run_tts(base_scripts, w)
            tts_walls = ", ".join(f"{w}: {res['tts'][str(w)]['wall']:.1f} s" for w in TTS_WORKERS)
            print(f"run {run + 1}: TTS by workers {tts_walls}", flush=True)
            for key, (label, group, in_flight) in zip(("base", "other"), E2E_VARIANTS):
                out = os.path.join(root, f"run{run}-{key}")
                shutil.rmtree(out, ignore_errors=True)
                res["e2e"][key] = {"variant": label, **run_e2e(urls[group], in_flight, langs, args.dialogues, run, out)}
                x = res["e2e"][key]
                print(f"run {run + 1}: end to end, {label}: {x['dialogues']}/{x['asked']} in {x['wall']:.1f} s", flush=True)
            results.append(res)
            with open(os.path.join(root, "results.json"), "w") as f:
                json.dump(results, f, ensure_ascii=False, indent=1)
    finally:
        for group in servers.values():
            for s in group:
                s.stop()
    print(f"finished {dt.datetime.now().isoformat(timespec='seconds')}; load average {os.getloadavg()}")
    print()
    print(report(results, langs, args.dialogues))
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
