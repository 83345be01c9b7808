"""DuckDB query latency over a catalog of 1,000,000 pairs.

    .venv/bin/python -m benchmarks.bench_catalog [--rows 1000000] [--runs 7] [--parts 10]

Setup (not timed): synthetic Pair rows built column-wise (numpy → pyarrow, no Python record
objects) with the exact Arrow schema of catalog.schema.Pair, written the way a build writes
them (catalog.parquet.write_table, one file per part and source under
catalog/pairs/source=<s>/), a committed-style Version listing those files, and catalog.duckdb
made by catalog.views.write_catalog_db. Timed: each query on a fresh read-only connection to
catalog.duckdb (cold: first execution) and then repeated on that connection (warm).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import machine
from catalog.parquet import write_table
from catalog.schema import Pair, arrow_schema
from catalog.store import Store
from catalog.versions import Part, Version, commit
from catalog.views import CATALOG_DB, write_catalog_db

# source: (share of recordings, langs and their weights, bandwidth, license, has channels)
SOURCES = {
    "fisher": (0.55, {"en": 1.0}, "narrowband", "LDC-User-Agreement", True),
    "callhome": (0.10, {"en": 1.0}, "narrowband", "LDC-User-Agreement", True),
    "podcast": (0.20, {"en": 0.8, "hi": 0.2}, "wideband", "CC-BY-4.0", False),
    "synthetic": (0.15, {"hi": 0.4, "te": 0.4, "en": 0.2}, "wideband", "CC0-1.0", True),
}
PAIRS_PER_RECORDING = 150
FRAGMENTS = [
    f"{a} {b}" for a in ("i think", "you know", "so we", "well they", "and then", "but i", "my friend",
                         "the kids", "last week", "honestly it", "मुझे लगता", "అవును కానీ")
    for b in ("went to the store", "said it was fine", "were not sure", "moved to texas", "like that show",
              "never tried it", "really liked it", "had a long day", "बहुत अच्छा था", "చాలా బాగుంది",
              "need more time", "called me back", "forgot about it")
]

QUERIES = {
    "grouped aggregate": "select lang, source, count(*), sum(ai_duration_s)/3600 as ai_hours from pairs group by all",
    "filtered aggregate": (
        "select lang, count(*), sum(ai_duration_s)/3600 as ai_hours from pairs "
        "where bandwidth='wideband' and gap_s between -0.5 and 1.0 group by lang"
    ),
    "gap percentiles": "select source, quantile_cont(gap_s, [0.1, 0.5, 0.9]) from pairs group by source",
    "list column (context)": "select lang, avg(len(context_texts)), max(len(context_turn_ids)) from pairs group by lang",
}


def _pad(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width=width, padding="0")


def _join(*parts, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


def make_pairs(rows: int, seed: int, shard_version: str) -> pa.Table:
    """`rows` synthetic pairs, grouped by recording, as a table of arrow_schema(Pair)."""
    rng = np.random.default_rng(seed)
    n_rec = max(1, -(-rows // PAIRS_PER_RECORDING))
    names = list(SOURCES)
    src_of_rec = rng.choice(len(names), size=n_rec, p=[SOURCES[s][0] for s in names])
    rec_lang, rec_ids = [], []
    for r, si in enumerate(src_of_rec):  # per recording (thousands), not per row
        name, (_, langs, *_rest) = names[si], SOURCES[names[si]]
        rec_lang.append(rng.choice(list(langs), p=list(langs.values())))
        rec_ids.append(f"{name}-{name[:2]}_{r:07d}")
    rec = np.repeat(np.arange(n_rec), PAIRS_PER_RECORDING)[:rows]
    k = np.arange(rows) - rec * PAIRS_PER_RECORDING  # pair index inside its recording
    src = src_of_rec[rec]

    rec_id = pa.array(rec_ids).take(pa.array(rec))
    source = pa.array(names).take(pa.array(src))
    lang = pa.array(rec_lang).take(pa.array(rec))
    bandwidth = pa.array([SOURCES[s][2] for s in names]).take(pa.array(src))
    license_ = pa.array([SOURCES[s][3] for s in names]).take(pa.array(src))
    has_channels = np.array([SOURCES[s][4] for s in names])[src]

    user_is_a = (k % 2 == 0)
    spk_a, spk_b = _join(rec_id, pa.scalar("-A")), _join(rec_id, pa.scalar("-B"))
    user_spk = pc.if_else(pa.array(user_is_a), spk_a, spk_b)
    ai_spk = pc.if_else(pa.array(user_is_a), spk_b, spk_a)
    user_ch = pa.array(np.where(user_is_a, 0, 1), mask=~has_channels)
    ai_ch = pa.array(np.where(user_is_a, 1, 0), mask=~has_channels)

    user_dur = np.clip(rng.lognormal(np.log(2.6), 0.7, rows), 0.3, 30.0).round(3)
    ai_dur = np.clip(rng.lognormal(np.log(2.6), 0.7, rows), 0.3, 30.0).round(3)
    gap = np.clip(rng.normal(0.2, 0.55, rows), -3.0, 5.0).round(3)
    user_start = (k * 3.4 + rng.uniform(0, 0.5, rows)).round(3)
    user_end = (user_start + user_dur).round(3)
    ai_start = (user_end + gap).round(3)
    ai_end = (ai_start + ai_dur).round(3)
    turn = k  # pair k: user turn k, AI turn k + 1 (every floor transfer gives a pair)
    user_turn = _join(rec_id, pa.scalar("-t"), _pad(turn, 5))
    ai_turn = _join(rec_id, pa.scalar("-t"), _pad(turn + 1, 5))
    pair_id = _join(rec_id, pa.scalar("-p"), _pad(turn + 1, 5))

    frags = pa.array(FRAGMENTS)

    def text(n: int) -> pa.Array:
        picks = [frags.take(pa.array(rng.integers(0, len(FRAGMENTS), n))) for _ in range(3)]
        return _join(*picks, sep=" ")

    # Context: up to 4 previous turns (fewer at a recording's start), flattened into list arrays.
    n_ctx = np.minimum(turn, 4)
    offsets = pa.array(np.concatenate([[0], np.cumsum(n_ctx)]).astype(np.int32))
    total = int(n_ctx.sum())
    row_of = np.repeat(np.arange(rows), n_ctx)
    back = np.arange(total) - np.repeat(offsets.to_numpy()[:-1], n_ctx)  # 0..n_ctx-1
    ctx_turn_no = turn[row_of] - n_ctx[row_of] + back
    ctx_rec = rec_id.take(pa.array(row_of))
    ctx_turn_ids = _join(ctx_rec, pa.scalar("-t"), _pad(ctx_turn_no, 5))
    ctx_speakers = _join(ctx_rec, pa.array(np.where(ctx_turn_no % 2 == 0, "-A", "-B")))
    ctx_start = pa.array((user_start - n_ctx * 3.1).clip(0).round(3), mask=(n_ctx == 0))
    shard = _join(pa.scalar(f"shards/{shard_version}/pairs-"), _pad(np.arange(rows) // 280, 6), pa.scalar(".tar"))

    columns = {
        "pair_id": pair_id, "recording_id": rec_id, "source": source, "lang": lang, "license": license_,
        "bandwidth": bandwidth, "user_turn_id": user_turn, "ai_turn_id": ai_turn,
        "user_speaker_id": user_spk, "ai_speaker_id": ai_spk, "user_channel": user_ch, "ai_channel": ai_ch,
        "user_start_s": user_start, "user_end_s": user_end, "ai_start_s": ai_start, "ai_end_s": ai_end,
        "user_duration_s": user_dur, "ai_duration_s": ai_dur, "gap_s": gap, "is_interruption": gap < -0.5,
        "user_text": text(rows), "ai_text": text(rows),
        "context_turn_ids": pa.ListArray.from_arrays(offsets, ctx_turn_ids),
        "context_speaker_ids": pa.ListArray.from_arrays(offsets, ctx_speakers),
        "context_texts": pa.ListArray.from_arrays(offsets, text(total)),
        "context_start_s": ctx_start, "shard": shard,
    }
    schema = arrow_schema(Pair)
    arrays = [c if isinstance(c, pa.Array) else pa.array(c) for c in (columns[f.name] for f in schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_catalog(store: Store, table: pa.Table, parts: int) -> Version:
    """Write the pairs as a build would (one Parquet file per part and source), commit a version
    listing them, and create catalog.duckdb."""
    version_name = "v-bench"
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    version_parts = []
    for i in range(parts):
        chunk = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        part_id = f"part{i:03d}"
        files = []
        for src in sorted(set(chunk.column("source").unique().to_pylist())):
            rel = f"catalog/pairs/source={src}/part-{part_id}.parquet"
            write_table(store, rel, Pair, chunk.filter(pc.equal(chunk.column("source"), src)))
            files.append(rel)
        version_parts.append(Part(part_id, "bench", {}, {"pairs": files}, []))
    version = Version(version_name, None, version_parts)
    commit(store, version)
    write_catalog_db(store, version)
    return version


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=7, help="warm runs per query (after the cold one)")
    ap.add_argument("--parts", type=int, default=10, help="build parts (each one Parquet file per source)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="corpus directory (default: a temporary one, removed after)")
    args = ap.parse_args(argv)
    if args.rows < 1 or args.runs < 1 or args.parts < 1:
        ap.error("--rows, --runs and --parts must be at least 1")
    tmp = tempfile.mkdtemp(prefix="bench-catalog-") if args.out is None else None
    root = tmp or os.path.abspath(args.out)
    try:
        return _bench(args, root)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _bench(args: argparse.Namespace, root: str) -> int:
    print(f"bench_catalog  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine(('duckdb', 'pyarrow'))}")
    store = Store(root)
    t0 = time.perf_counter()
    table = make_pairs(args.rows, args.seed, "v-bench")
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    version = write_catalog(store, table, args.parts)
    t_write = time.perf_counter() - t0
    files = version.files("pairs")
    size = sum(store.size(f) for f in files)
    print(f"setup (not timed): {table.num_rows:,} pairs built in {t_make:.1f} s; {len(files)} Parquet files "
          f"({args.parts} parts x sources), {size / 1e6:.1f} MB zstd, written + views in {t_write:.1f} s")
    del table

    db = store.path(CATALOG_DB)
    con = duckdb.connect(db, read_only=True)
    n = con.execute("select count(*) from pairs").fetchone()[0]
    con.close()
    if n != args.rows:
        print(f"ERROR: pairs view has {n} rows, expected {args.rows}", file=sys.stderr)
        return 1

    results = []
    for name, sql in QUERIES.items():
        t0 = time.perf_counter()
        con = duckdb.connect(db, read_only=True)
        t_connect = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = con.execute(sql).fetchall()
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            con.execute(sql).fetchall()
            warm.append(time.perf_counter() - t0)
        con.close()
        results.append((name, sql, t_connect, cold, statistics.median(warm), min(warm), max(warm), len(out)))

    print()
    print(f"DuckDB over catalog.duckdb views, {args.rows:,} pairs, threads={os.cpu_count()}; "
          f"cold = first run on a fresh connection (OS page cache warm), warm = median of {args.runs}")
    print(f"{'query':24}{'rows out':>9}{'connect s':>11}{'cold s':>9}{'warm s':>9}{'warm min':>10}{'warm max':>10}{'< 1 s':>7}")
    for name, _sql, t_conn, cold, warm, lo, hi, nout in results:
        ok = "yes" if max(cold, warm) < 1.0 else "NO"
        print(f"{name:24}{nout:>9}{t_conn:>11.3f}{cold:>9.3f}{warm:>9.3f}{lo:>10.3f}{hi:>10.3f}{ok:>7}")
    print()
    for name, sql, *_ in results:
        print(f"  {name}: {sql}")
    con = duckdb.connect(db, read_only=True)
    print()
    print("grouped aggregate result:")
    for row in con.execute(QUERIES["grouped aggregate"] + " order by 1, 2").fetchall():
        print(f"  {row[0]:4} {row[1]:10} {row[2]:>9,} pairs {row[3]:>8.1f} AI hours")
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
