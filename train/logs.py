"""Training metrics: TensorBoard scalars and a JSON-lines file, written by rank 0 only."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

from catalog.store import Store


class MetricsLog:
    def __init__(self, store: Store, is_main: bool, tensorboard_dir: Optional[str] = None):
        self.is_main = is_main
        self.store = store
        self._lines: list[str] = []
        self._writer = None
        if is_main:
            tb = tensorboard_dir or (store.path("tensorboard") if store.is_local else None)
            if tb:
                from torch.utils.tensorboard import SummaryWriter

                os.makedirs(tb, exist_ok=True)
                self._writer = SummaryWriter(tb)
            if store.exists("metrics.jsonl"):
                self._lines = store.read_bytes("metrics.jsonl").decode().splitlines()

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        record = {"step": step, "split": split, "time": round(time.time(), 3), **values}
        self._lines.append(json.dumps(record, sort_keys=True))
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(f"{split}/{k}", v, step)
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(f"[{split} step {step}] {shown}", file=sys.stderr, flush=True)

    def flush(self) -> None:
        """Persist the metrics file (called at checkpoints, so it matches what a resume sees)."""
        if not self.is_main:
            return
        self.store.write_bytes("metrics.jsonl", ("\n".join(self._lines) + "\n").encode())
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
