"""Where stage callables run: Ray Data (local or a cluster), or inline in this process.

Both map a callable class (constructed once per worker, as model-holding stages need) over
items and stream results back to the driver as they finish. The project writes no scheduler:
with Ray, Ray Data schedules; inline is a plain loop for debugging and small tests.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Iterator, Protocol, Sequence

from pipelines.config import EngineConfig


class Engine(Protocol):
    def map(self, fn_class: type, ctor_args: tuple, items: Sequence[Any], num_cpus: float, num_gpus: float = 0.0) -> Iterator[Any]: ...

    def shutdown(self) -> None: ...


class InlineEngine:
    def map(self, fn_class: type, ctor_args: tuple, items: Sequence[Any], num_cpus: float, num_gpus: float = 0.0) -> Iterator[Any]:
        fn = fn_class(*ctor_args)
        for item in items:
            yield fn(item)

    def shutdown(self) -> None:
        pass


class _PickledRow:
    """Ray Data adapter: rows carry pickled items and results, so any record type travels."""

    def __init__(self, fn_class: type, ctor_args: tuple):
        self.fn = fn_class(*ctor_args)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"result": pickle.dumps(self.fn(pickle.loads(row["item"])))}


class RayEngine:
    def __init__(self, cfg: EngineConfig):
        import ray
        from ray.data import DataContext

        self._ray = ray
        if not ray.is_initialized():
            project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            ray.init(
                address=cfg.address,
                num_cpus=cfg.num_cpus if cfg.address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=True,
                logging_level="WARNING",
                runtime_env={"env_vars": {"PYTHONPATH": project_root}} if cfg.address is None else None,
            )
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the build shows its own progress
        ctx.print_on_execution_start = False
        self.max_workers = max(1, int(ray.available_resources().get("CPU", 1)))

    def map(self, fn_class: type, ctor_args: tuple, items: Sequence[Any], num_cpus: float, num_gpus: float = 0.0) -> Iterator[Any]:
        if not items:
            return
        ray = self._ray
        rows = [{"item": pickle.dumps(it)} for it in items]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 1000))
        workers = max(1, min(len(rows), int(self.max_workers / num_cpus)))
        if num_gpus:
            gpus = self._ray.available_resources().get("GPU", 0)
            workers = max(1, min(workers, int(gpus / num_gpus)))
        ds = ds.map(
            _PickledRow,
            fn_constructor_args=(fn_class, ctor_args),
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=num_cpus,
            num_gpus=num_gpus or None,
        )
        for row in ds.iter_rows():
            yield pickle.loads(row["result"])

    def shutdown(self) -> None:
        self._ray.shutdown()


def make_engine(cfg: EngineConfig) -> Engine:
    return RayEngine(cfg) if cfg.kind == "ray" else InlineEngine()
