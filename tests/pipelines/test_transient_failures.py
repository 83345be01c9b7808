"""Failures of the environment are never cached as rejects: a build that meets a missing tool,
a killed subprocess or a full disk commits nothing, says why, and the next build in a healthy
environment gives exactly the corpus a clean build gives. Each fault is real: a PATH without
ffmpeg/ffprobe, an ffmpeg that the kernel kills (SIGKILL), a small tmpfs as the output disk."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import duckdb
import pytest
from rich.console import Console

from pipelines.config import load_build_config
from pipelines.progress import Reporter
from pipelines.run import BuildFailed, run_build
from tests.pipelines.test_build import build
from tests.pipelines.test_build_resume import _shard_files, _snapshot

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _failed_runs(out):
    con = duckdb.connect(os.path.join(str(out), "catalog.duckdb"), read_only=True)
    try:
        return con.execute("select recording_id, phase from phase_runs where status = 'failed' order by all").fetchall()
    finally:
        con.close()


def _cached_rejects(out):
    work = os.path.join(str(out), "work")
    found = []
    for dirpath, _, files in os.walk(work):
        for f in files:
            with open(os.path.join(dirpath, f)) as fh:
                if '"reject"' in fh.read():
                    found.append(f)
    return found


def _assert_same_as_clean(demo_copy, out, tmp_path):
    clean = tmp_path / "clean"
    build(demo_copy, clean)
    assert _snapshot(out) == _snapshot(clean)
    assert _shard_files(out) == _shard_files(clean)


def test_missing_tools_fail_the_build_and_the_next_build_does_the_work(demo_copy, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BuildFailed, match="3 recording"):
        build(demo_copy, out)
    assert not (out / "CURRENT.json").exists()
    assert not _cached_rejects(out)
    assert [phase for _, phase in _failed_runs(out)] == ["ingest"] * 3
    monkeypatch.undo()
    s = build(demo_copy, out)
    assert s["status"] == "committed" and s["new"]["recordings"] == 3 and not s["rejects_by_reason"]
    _assert_same_as_clean(demo_copy, out, tmp_path)


def test_a_killed_ffmpeg_is_not_a_bad_file(demo_copy, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    killer = bin_dir / "ffmpeg"
    killer.write_text("#!/bin/sh\nkill -KILL $$\n")  # what the out-of-memory killer does to it
    killer.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(BuildFailed):
        build(demo_copy, out)
    assert not _cached_rejects(out) and not (out / "CURRENT.json").exists()
    monkeypatch.undo()
    build(demo_copy, out)
    _assert_same_as_clean(demo_copy, out, tmp_path)


def test_commit_on_failure_commits_the_rest_and_the_next_build_adds_what_failed(demo_copy, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    victim = sorted(demo_copy.rglob("*.sph"))[0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ffmpeg"  # the kernel kills ffmpeg while it decodes one file, only that one
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *{victim.name}*) kill -KILL $$;; esac\n'
                       f'exec {shutil.which("ffmpeg")} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = load_build_config(source="fisher", out=str(out),
                            source_options={"audio": [str(demo_copy)], "transcripts": [str(demo_copy)]},
                            overrides=["shard.target_shard_mb=0.5", "shard.window_s=20"],
                            engine={"kind": "inline", "commit_on_failure": True, "transient_retries": 0})
    s = run_build(cfg, Reporter(Console(file=io.StringIO(), width=200)))
    assert s["status"] == "committed" and s["new"]["recordings"] == 2 and len(s["failed"]) == 1
    assert s["failed"][0]["recording_id"].endswith(victim.stem) and s["failed"][0]["failure"] == "subprocess_killed"
    monkeypatch.undo()
    again = build(demo_copy, out)
    assert again["status"] == "committed" and again["new"]["recordings"] == 1 and again["totals"]["recordings"] == 3


def _mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "600k"):
        pytest.skip("needs root to mount a tmpfs (CI runs as root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_loses_nothing(demo_copy, tmp_path, small_disk):
    out = small_disk / "corpus"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.build", "--source", "fisher", "--input", str(demo_copy), "--out", str(out),
         "--engine", "inline", "--set", "shard.target_shard_mb=0.5", "--set", "shard.window_s=20"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "build failed" in proc.stderr and ("disk_full" in proc.stderr or "No space left" in proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not _cached_rejects(out) and not (out / "CURRENT.json").exists()
    # Space freed (the tmpfs grows): the next build completes, the same as a clean build.
    assert subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)]).returncode == 0
    s = build(demo_copy, out)
    assert s["status"] == "committed" and s["new"]["recordings"] == 3
    _assert_same_as_clean(demo_copy, out, tmp_path)
    shutil.rmtree(out)


def test_retry_rejects_runs_cached_rejects_again(demo_copy, tmp_path, monkeypatch):
    """A reject is cached for good, unless asked: an ffmpeg that refuses one file (exit 1, as for a
    broken file) gives `audio_decode_failed`; after ffmpeg is fixed, a plain rebuild keeps the
    reject, and `--retry-rejects audio_decode_failed` decodes the file."""
    out = tmp_path / "corpus"
    victim = sorted(demo_copy.rglob("*.sph"))[0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ffmpeg"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *{victim.name}*) echo "Invalid data" >&2; exit 1;; esac\n'
                       f'exec {shutil.which("ffmpeg")} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    first = build(demo_copy, out)
    assert first["rejects_by_reason"] == {"audio_decode_failed": 1} and first["totals"]["recordings"] == 2
    monkeypatch.undo()
    assert build(demo_copy, out)["status"] == "unchanged"
    cli = [sys.executable, "-m", "pipelines.build", "--source", "fisher", "--input", str(demo_copy), "--out", str(out),
           "--engine", "inline", "--set", "shard.target_shard_mb=0.5", "--set", "shard.window_s=20"]
    proc = subprocess.run(cli + ["--retry-rejects", "no_speech"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "nothing new" in proc.stderr, proc.stderr
    proc = subprocess.run(cli + ["--retry-rejects", "audio_decode_failed"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    con = duckdb.connect(os.path.join(str(out), "catalog.duckdb"), read_only=True)
    assert con.execute("select count(*) from recordings").fetchone()[0] == 3
    assert con.execute("select count(*) from rejects").fetchone()[0] == 0
    con.close()
    # The same data as a clean build (under another version name: this corpus has a history).
    from catalog.compare import compare

    build(demo_copy, tmp_path / "clean")
    assert compare(str(out), str(tmp_path / "clean")) == []
