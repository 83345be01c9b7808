"""One build, start to commit: discover → plan → process recordings → assemble a part →
write shards → commit the version → catalog views → build record and summary."""
from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from catalog.lock import BuildLock
from catalog.parquet import read_table, write_table
from catalog.schema import Build, PhaseRun, Reject, Shard, from_arrow, from_dict, to_arrow, to_dict
from catalog.store import Store
from catalog.versions import Part, Version, commit, current
from catalog.views import CATALOG_DB, connect, write_catalog_db
from pipelines.assemble import phase_run_records, phase_summary, plan_shard_jobs, write_part_tables
from pipelines.config import BuildConfig, check_paths
from pipelines.engine import Engine, make_engine
from pipelines.plan import BuildPlan, plan_build
from pipelines.process import ProcessOptions, RecordingProcessor, ShardProcessor
from pipelines.progress import Reporter
from stages.corpus.shards import write_index
from stages.sources import make_source

PACKAGE_VERSION = "0.1.0"


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=__file__.rsplit("/", 2)[0],
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{PACKAGE_VERSION}+{sha}" if sha else PACKAGE_VERSION


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class BuildFailed(RuntimeError):
    """Recordings failed for reasons of the environment; nothing was committed."""


def resolve_threads(cfg: BuildConfig) -> BuildConfig:
    """`analyze.asr.cpu_threads: 0` becomes the CPUs a recording worker holds, the same number
    in every engine: thread counts change Whisper's float sums and so the corpus's bytes, and
    the resolved number is part of the analysis settings that key the caches."""
    asr = cfg.pipeline.analyze.asr
    if asr.cpu_threads:
        return cfg
    threads = max(1, math.ceil(cfg.engine.cpus_per_recording))
    pipeline = cfg.pipeline.model_copy(update={"analyze": cfg.pipeline.analyze.model_copy(
        update={"asr": asr.model_copy(update={"cpu_threads": threads})})})
    return cfg.model_copy(update={"pipeline": pipeline})


def run_build(cfg: BuildConfig, reporter: Optional[Reporter] = None, retry_rejects: Optional[list[str]] = None,
              verbose: bool = False) -> dict[str, Any]:
    """`retry_rejects`: run cached rejects with these reasons again ([] = every reason).
    `verbose`: Ray's own messages on the console too (they always go to the build's log file)."""
    reporter = reporter or Reporter()
    check_paths(cfg)
    cfg = resolve_threads(cfg)
    t0 = time.time()
    started_at = _now()
    build_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    store = Store(cfg.out, cfg.storage_options)
    with BuildLock(store):
        store.clear_temporary()
        source = make_source(cfg.source, cfg.run_source_options())
        discovery = source.discover()
        reporter.info(f"[bold]discover[/] {cfg.source}: {len(discovery.tasks)} recordings, {len(discovery.rejects)} rejected"
                      + (f", {len(discovery.deferred)} deferred to the next build" if discovery.deferred else ""))
        parent = current(store)
        redo = _rejected_recordings(store, retry_rejects) if retry_rejects is not None and parent else set()
        plan = plan_build(parent, cfg.source, source, discovery, cfg.pipeline, redo)
        outcome = _Outcome()
        if plan.unchanged:
            assert parent is not None
            version, status = parent, "unchanged"
            reporter.info(f"nothing new: corpus stays at {version.version}")
        else:
            options = ProcessOptions(retry_rejects=tuple(retry_rejects) if retry_rejects is not None else None,
                                     transient_retries=cfg.engine.transient_retries,
                                     threads=max(1, math.ceil(cfg.engine.cpus_per_recording)))
            version, status = _build_part(cfg, store, plan, options, reporter, outcome, verbose)
        phase_runs = phase_run_records(build_id, outcome.processed)
        if phase_runs:
            write_table(store, f"catalog/phase_runs/build-{build_id}.parquet", PhaseRun, to_arrow(PhaseRun, phase_runs))
        totals, rejects_by_reason = _totals(store)
        version_name = version.version if version else ""
        record = Build(
            build_id=build_id,
            version=version_name,
            parent_version=plan.parent.version if plan.parent else None,
            status=status,
            started_at=started_at,
            finished_at=_now(),
            sources=[cfg.source],
            manifest_json=json.dumps(cfg.record(), sort_keys=True),
            config_hash=cfg.config_hash(),
            code_version=code_version(),
            counts_json=json.dumps({"new": outcome.counts, "totals": totals,
                                    "failed": len(outcome.failed)}, sort_keys=True),
        )
        store.write_json(f"builds/{build_id}.json", to_dict(record))
        write_table(store, f"catalog/builds/build-{build_id}.parquet", Build, to_arrow(Build, [record]))
        write_catalog_db(store, current(store))
    summary = {
        "build_id": build_id,
        "version": version_name,
        "status": status,
        "new": outcome.counts,
        "totals": totals,
        "rejects_by_reason": rejects_by_reason,
        "failed": outcome.failed,
        "deferred": [to_dict(r) for r in discovery.deferred],
        "phases": phase_summary(phase_runs, top=5),
        "paths": {
            "out": store.uri(""),
            "catalog": store.uri(CATALOG_DB),
            "shard_index": store.uri(f"shards/{version_name}/index.json"),
            "build_record": store.uri(f"builds/{build_id}.json"),
        },
        "elapsed_s": time.time() - t0,
    }
    reporter.summary(summary)
    if outcome.failed and status != "committed":
        raise BuildFailed(f"{len(outcome.failed)} recording(s) failed for reasons of the environment; nothing was "
                          "committed (what succeeded is cached: run the build again once the cause is fixed)")
    return summary


@dataclass
class _Outcome:
    processed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # environment failures, not cached
    counts: dict[str, int] = field(default_factory=lambda: _new_counts({}))


def _rejected_recordings(store: Store, reasons: list[str]) -> set[str]:
    con = connect(store)
    try:
        rows = con.execute("select item_id, reason from rejects").fetchall()
    finally:
        con.close()
    return {item for item, reason in rows if not reasons or reason in reasons}


def _build_part(cfg: BuildConfig, store: Store, plan: BuildPlan, options: ProcessOptions, reporter: Reporter,
                outcome: _Outcome, verbose: bool = False) -> tuple[Optional[Version], str]:
    """Process the new recordings, write shards and tables, commit. With environment failures
    and no `engine.commit_on_failure`, nothing is committed (status "failed")."""
    engine: Optional[Engine] = make_engine(cfg.engine, verbose) if plan.new_tasks else None
    left_out: set[str] = set()
    shards: list[Shard] = []
    try:
        if engine is not None:
            source = make_source(cfg.source, cfg.run_source_options())
            args = (source, cfg.out, cfg.storage_options, cfg.pipeline, options)
            with reporter.stage("recordings", len(plan.new_tasks)) as advance:
                for res in engine.map(RecordingProcessor, args, plan.new_tasks, cfg.engine.cpus_per_recording,
                                      cfg.engine.gpus_per_recording):
                    outcome.processed.append(res)
                    if res["status"] == "failed":
                        outcome.failed.append(res)
                        reporter.info(f"[red]failed[/] {res['recording_id']} in {res['phase']}: "
                                      f"{res['failure']}: {res['detail']}")
                    advance(**{res["status"]: 1}, **({"cached": 1} if all(p["cached"] for p in res["phases"]) else {}))
        if outcome.failed and not cfg.engine.commit_on_failure:
            return plan.parent, "failed"
        left_out = {r["recording_id"] for r in outcome.failed}
        tasks = [t for t in plan.new_tasks if t.recording_id not in left_out]
        version_name = plan.version(left_out)
        shard_plan = plan_shard_jobs(store, tasks, version_name, cfg.pipeline)
        if shard_plan.jobs:
            assert engine is not None
            args = (cfg.out, cfg.storage_options, cfg.pipeline.shard)
            with reporter.stage("shards", len(shard_plan.jobs)) as advance:
                for res in engine.map(ShardProcessor, args, shard_plan.jobs, cfg.engine.cpus_per_shard):
                    shard = from_dict(Shard, res["shard"])
                    shards.append(shard)
                    advance(samples=shard.num_samples, MB=round(shard.num_bytes / 1e6))
    finally:
        if engine is not None:
            engine.shutdown()
    parts = list(plan.kept)
    new_items = plan.new_items(left_out)
    if new_items:
        part = write_part_tables(store, tasks, shard_plan, shards, [], version_name, cfg.source)
        outcome.counts = _new_counts(part.counts)
        parts.append(Part(version_name, plan.config_key, new_items, part.files, sorted(s.path for s in shards)))
    discovery = dict(plan.parent.discovery) if plan.parent else {}
    discovery_file = f"catalog/rejects/source={cfg.source}/discovery-{version_name}.parquet"
    write_table(store, discovery_file, Reject, to_arrow(Reject, plan.discovery_rejects) if plan.discovery_rejects else None)
    discovery[cfg.source] = {"key": plan.discovery_key, "file": discovery_file}
    outcome.counts["rejects"] = outcome.counts.get("rejects", 0) + len(plan.discovery_rejects)
    version = Version(version_name, plan.parent.version if plan.parent else None, parts, discovery)
    write_index(store, f"shards/{version.version}/index.json", version.version, _all_shards(store, version))
    commit(store, version)
    return version, "committed"


def _all_shards(store: Store, version: Version) -> list[Shard]:
    shards: list[Shard] = []
    for rel in version.files("shards"):
        shards.extend(from_arrow(Shard, read_table(store, rel)))
    return sorted(shards, key=lambda s: s.path)


_COUNTED = ("recordings", "utterances", "turns", "pairs", "windows", "codec_chunks", "shards", "rejects")


def _new_counts(counts: dict[str, int]) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in _COUNTED}


def _totals(store: Store) -> tuple[dict[str, Any], dict[str, int]]:
    con = connect(store)
    try:
        q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
        totals = {name: q(f'select count(*) from "{name}"') for name in _COUNTED}
        totals["hours"] = round(float(q("select coalesce(sum(duration_s), 0) / 3600 from recordings")), 3)
        totals["ai_hours"] = round(float(q("select coalesce(sum(ai_duration_s), 0) / 3600 from pairs")), 3)
        by_reason = dict(Counter({r: n for r, n in con.execute("select reason, count(*) from rejects group by reason").fetchall()}))
    finally:
        con.close()
    return totals, by_reason
