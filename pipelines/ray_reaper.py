"""python -m pipelines.ray_reaper TEMP_DIR: cleans up after a build's local Ray, however the
build ends.

The build starts this process before it starts Ray, holding the write end of its stdin. When
that pipe closes (the build finished, was interrupted, or was killed with SIGKILL, which no
handler sees), every process whose command line names TEMP_DIR (Ray's GCS, raylet, workers and
helpers all carry their session folder there) is terminated, then killed, and TEMP_DIR is
removed. Linux only (/proc); elsewhere it removes the folder and leaves processes to Ray.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def processes_naming(text: str) -> list[int]:
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    needle = text.encode()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def reap(temp_dir: str, grace_s: float = 3.0) -> int:
    """Terminate (then kill) the processes of the Ray session under temp_dir; remove it."""
    pids = processes_naming(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace_s
        while pids and time.time() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
            time.sleep(0.05)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return len(pids)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def main() -> int:
    temp_dir = sys.argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the terminal is the build's to handle
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    reap(temp_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
