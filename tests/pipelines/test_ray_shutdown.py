"""A build on a local Ray that is interrupted (SIGTERM) or killed (SIGKILL) mid-work leaves no Ray
process and no Ray session folder behind, and a rerun completes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.ray_reaper import processes_naming

pytestmark = pytest.mark.ray

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _children_reaper_dir(driver_pid: int):
    """The Ray folder of this build: its watchdog is a child of the driver and names it."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == driver_pid and b"pipelines.ray_reaper" in argv:
            return argv[argv.index(b"pipelines.ray_reaper") + 1].decode()
    return None


def _start(root, out):
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.build", "--source", "fisher", "--input", str(root), "--out", str(out),
         "--engine", "ray", "--num-cpus", "2", "--set", "shard.target_shard_mb=0.5"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _wait_for_workers(proc, timeout_s=180):
    deadline = time.time() + timeout_s
    temp_dir = None
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        temp_dir = temp_dir or _children_reaper_dir(proc.pid)
        # Ray's own processes (GCS, raylet) and at least one worker running our stages.
        if temp_dir and any(b"default_worker" in open(f"/proc/{p}/cmdline", "rb").read()
                            for p in processes_naming(temp_dir) if os.path.exists(f"/proc/{p}")):
            return temp_dir
        time.sleep(0.2)
    proc.kill()
    pytest.fail("Ray workers never started")


def _gone(temp_dir, timeout_s=60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not processes_naming(temp_dir) and not os.path.exists(temp_dir):
            return True
        time.sleep(0.25)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_build_leaves_no_ray_behind(demo_copy, tmp_path, sig):
    out = tmp_path / "corpus"
    proc = _start(demo_copy, out)
    temp_dir = _wait_for_workers(proc)
    running = processes_naming(temp_dir)
    assert len(running) >= 3, running  # GCS, raylet, workers...
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    # SIGTERM unwinds the build (Ray's driver handler exits with 15, ours with 143).
    assert code in ((15, 128 + signal.SIGTERM) if sig == signal.SIGTERM else (-signal.SIGKILL,))
    assert _gone(temp_dir), (processes_naming(temp_dir), os.path.exists(temp_dir))
    # The lock is free and the build completes.
    again = _start(demo_copy, out)
    assert again.wait(timeout=600) == 0, again.stderr.read().decode()
    assert (out / "CURRENT.json").exists()
