"""A build killed with SIGKILL at any point and run again ends exactly like an uninterrupted
build: same catalog rows, same shard bytes, nothing partial visible."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from tests.pipelines.test_build import build

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start_build(root, out):
    cmd = [
        sys.executable, "-m", "pipelines.build", "--source", "fisher", "--input", str(root), "--out", str(out),
        "--engine", "inline", "--set", "shard.target_shard_mb=0.5", "--set", "shard.window_s=20",
    ]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc, predicate, timeout_s=120):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail("build finished before the kill point was reached")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("kill point not reached")


def _snapshot(out):
    con = duckdb.connect(os.path.join(str(out), "catalog.duckdb"), read_only=True)
    tables = {}
    for table, order in [("recordings", "recording_id"), ("utterances", "utterance_id"), ("turns", "turn_id"),
                         ("pairs", "pair_id"), ("windows", "window_id"), ("codec_chunks", "chunk_id"),
                         ("shards", "path"), ("rejects", "item_id, reason")]:
        tables[table] = con.execute(f"select * from {table} order by {order}").fetchall()
    con.close()
    return tables


def _shard_files(out):
    found = {}
    for dirpath, _, files in os.walk(os.path.join(str(out), "shards")):
        for f in files:
            if f.endswith(".tar"):
                path = os.path.join(dirpath, f)
                with open(path, "rb") as fh:
                    found[os.path.relpath(path, out)] = fh.read()
    return found


def _has(out, folder, suffix):
    path = os.path.join(str(out), folder)
    if not os.path.isdir(path):
        return False
    return any(f.endswith(suffix) for _, _, files in os.walk(path) for f in files)


@pytest.mark.parametrize("kill_point", ["during_ingest", "during_shards", "before_commit"])
def test_killed_build_resumes_to_the_same_corpus(demo_copy, tmp_path, kill_point):
    reference = tmp_path / "reference"
    build(demo_copy, reference)

    out = tmp_path / "killed"
    proc = _start_build(demo_copy, out)
    predicates = {
        "during_ingest": lambda: _has(out, "work/segments", ".json"),
        "during_shards": lambda: _has(out, "shards", ".tar"),
        "before_commit": lambda: _has(out, "catalog/pairs", ".parquet"),
    }
    _kill_when(proc, predicates[kill_point])
    assert not os.path.exists(out / "CURRENT.json") or kill_point == "before_commit"

    summary = build(demo_copy, out)
    assert summary["status"] == "committed"
    assert _snapshot(out) == _snapshot(reference)
    assert _shard_files(out) == _shard_files(reference)
    assert not os.listdir(out / ".tmp") if (out / ".tmp").exists() else True
    again = build(demo_copy, out)
    assert again["status"] == "unchanged"
