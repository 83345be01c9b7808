"""One build, start to commit: discover → plan → process recordings → assemble a part →
write shards → commit the version → catalog views → build record and summary."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections import Counter
from typing import Any, Optional

from catalog.lock import BuildLock
from catalog.parquet import read_table, write_table
from catalog.schema import Build, Reject, Shard, from_arrow, from_dict, to_arrow, to_dict
from catalog.store import Store
from catalog.versions import Part, Version, commit, current
from catalog.views import CATALOG_DB, connect, write_catalog_db
from pipelines.assemble import PartTables, collect, plan_shard_jobs, write_part_tables
from pipelines.config import BuildConfig
from pipelines.engine import Engine, make_engine
from pipelines.plan import plan_build
from pipelines.process import RecordingProcessor, ShardProcessor
from pipelines.report import Reporter
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


def run_build(cfg: BuildConfig, reporter: Optional[Reporter] = None) -> dict[str, Any]:
    reporter = reporter or Reporter()
    t0 = time.time()
    started_at = _now()
    build_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    store = Store(cfg.out, cfg.storage_options)
    with BuildLock(store):
        store.clear_temporary()
        source = make_source(cfg.source, cfg.run_source_options())
        discovery = source.discover()
        reporter.info(f"[bold]discover[/] {cfg.source}: {len(discovery.tasks)} recordings, {len(discovery.rejects)} rejected")
        parent = current(store)
        plan = plan_build(parent, cfg.source, discovery, cfg.pipeline)
        tables = PartTables()
        if plan.unchanged:
            assert parent is not None
            version, status = parent, "unchanged"
            reporter.info(f"nothing new: corpus stays at {version.version}")
        else:
            version, status = _build_part(cfg, store, plan, reporter, tables), "committed"
        totals, rejects_by_reason = _totals(store)
        record = Build(
            build_id=build_id,
            version=version.version,
            parent_version=plan.parent.version if plan.parent else None,
            status=status,
            started_at=started_at,
            finished_at=_now(),
            sources=[cfg.source],
            manifest_json=json.dumps(cfg.record(), sort_keys=True),
            config_hash=cfg.config_hash(),
            code_version=code_version(),
            counts_json=json.dumps({"new": _new_counts(tables), "totals": totals}, sort_keys=True),
        )
        store.write_json(f"builds/{build_id}.json", to_dict(record))
        write_table(store, f"catalog/builds/build-{build_id}.parquet", Build, to_arrow(Build, [record]))
        write_catalog_db(store, version)
    summary = {
        "build_id": build_id,
        "version": version.version,
        "status": status,
        "new": _new_counts(tables),
        "totals": totals,
        "rejects_by_reason": rejects_by_reason,
        "paths": {
            "out": store.uri(""),
            "catalog": store.uri(CATALOG_DB),
            "shard_index": store.uri(f"shards/{version.version}/index.json"),
            "build_record": store.uri(f"builds/{build_id}.json"),
        },
        "elapsed_s": time.time() - t0,
    }
    reporter.summary(summary)
    return summary


def _build_part(cfg: BuildConfig, store: Store, plan, reporter: Reporter, tables: PartTables) -> Version:
    engine: Optional[Engine] = make_engine(cfg.engine) if plan.new_tasks else None
    try:
        if engine is not None:
            source = make_source(cfg.source, cfg.run_source_options())
            args = (source, cfg.out, cfg.storage_options, cfg.pipeline)
            with reporter.stage("ingest", len(plan.new_tasks)) as advance:
                for res in engine.map(RecordingProcessor, args, plan.new_tasks, cfg.engine.cpus_per_recording,
                                      cfg.engine.gpus_per_recording):
                    advance(**{res["status"]: 1}, **({"cached": 1} if res["cached"] else {}))
        collected = collect(store, plan.new_tasks)
        tables.__dict__.update(collected.__dict__)
        jobs = plan_shard_jobs(tables, plan.version, cfg.pipeline)
        if jobs:
            assert engine is not None
            args = (cfg.out, cfg.storage_options, cfg.pipeline.shard)
            with reporter.stage("shards", len(jobs)) as advance:
                for res in engine.map(ShardProcessor, args, jobs, cfg.engine.cpus_per_shard):
                    shard = from_dict(Shard, res["shard"])
                    tables.shards.append(shard)
                    advance(samples=shard.num_samples, MB=round(shard.num_bytes / 1e6))
        tables.shards.sort(key=lambda s: s.path)
    finally:
        if engine is not None:
            engine.shutdown()
    parts = list(plan.kept)
    if plan.new_items:
        files = write_part_tables(store, tables, plan.version, cfg.source)
        parts.append(Part(plan.version, plan.config_key, plan.new_items, files, [s.path for s in tables.shards]))
    discovery = dict(plan.parent.discovery) if plan.parent else {}
    discovery_file = f"catalog/rejects/source={cfg.source}/discovery-{plan.version}.parquet"
    write_table(store, discovery_file, Reject, to_arrow(Reject, plan.discovery_rejects) if plan.discovery_rejects else None)
    discovery[cfg.source] = {"key": plan.discovery_key, "file": discovery_file}
    tables.rejects.extend(plan.discovery_rejects)
    version = Version(plan.version, plan.parent.version if plan.parent else None, parts, discovery)
    write_index(store, f"shards/{version.version}/index.json", version.version, _all_shards(store, version))
    commit(store, version)
    return version


def _all_shards(store: Store, version: Version) -> list[Shard]:
    shards: list[Shard] = []
    for rel in version.files("shards"):
        shards.extend(from_arrow(Shard, read_table(store, rel)))
    return sorted(shards, key=lambda s: s.path)


def _new_counts(t: PartTables) -> dict[str, int]:
    return {
        "recordings": len(t.recordings),
        "utterances": len(t.utterances),
        "turns": len(t.turns),
        "pairs": len(t.pairs),
        "windows": len(t.windows),
        "codec_chunks": len(t.codec_chunks),
        "shards": len(t.shards),
        "rejects": len(t.rejects),
    }


def _totals(store: Store) -> tuple[dict[str, Any], dict[str, int]]:
    con = connect(store)
    try:
        q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
        totals = {name: q(f'select count(*) from "{name}"') for name in
                  ("recordings", "utterances", "turns", "pairs", "windows", "codec_chunks", "shards", "rejects")}
        totals["hours"] = round(float(q("select coalesce(sum(duration_s), 0) / 3600 from recordings")), 3)
        totals["ai_hours"] = round(float(q("select coalesce(sum(ai_duration_s), 0) / 3600 from pairs")), 3)
        by_reason = dict(Counter({r: n for r, n in con.execute("select reason, count(*) from rejects group by reason").fetchall()}))
    finally:
        con.close()
    return totals, by_reason
