"""One build at a time per output.

On a local disk an OS file lock (released by the kernel even after kill -9). On object
storage, which has no locks, a lock object with the owner and a heartbeat: a second build
refuses while the heartbeat is fresh, and takes over a lock whose owner stopped beating.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from typing import Optional

from catalog.store import Store

LOCK_NAME = ".build.lock"


class BuildLockedError(RuntimeError):
    pass


class BuildLock:
    def __init__(self, store: Store, stale_after_s: float = 120.0, heartbeat_s: float = 20.0):
        self.store = store
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}
        self._fd: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "BuildLock":
        if self.store.is_local:
            self._lock_local()
        else:
            self._lock_remote()
        return self

    def __exit__(self, *exc) -> None:
        if self.store.is_local:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
        else:
            self._stop.set()
            if self._thread:
                self._thread.join()
            self.store.remove(LOCK_NAME)

    def _lock_local(self) -> None:
        path = self.store.path(LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            raise BuildLockedError(f"another build is running on {self.store.url} ({holder or 'unknown owner'})")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.owner).encode())
        self._fd = fd

    def _lock_remote(self) -> None:
        if self.store.exists(LOCK_NAME):
            try:
                held = self.store.read_json(LOCK_NAME)
            except (ValueError, OSError):
                held = {"beat": 0}
            age = time.time() - float(held.get("beat", 0))
            if age < self.stale_after_s:
                raise BuildLockedError(
                    f"another build is running on {self.store.url} (host {held.get('host')}, pid {held.get('pid')}, "
                    f"last heartbeat {age:.0f}s ago; it is considered dead after {self.stale_after_s:.0f}s)"
                )
        self._beat()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self.store.write_json(LOCK_NAME, {**self.owner, "beat": time.time()})

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._beat()
