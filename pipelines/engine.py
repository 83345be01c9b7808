"""Where stage callables run: Ray Data (local or a cluster), or inline in this process.

Both map a callable class (constructed once per worker, as model-holding stages need) over
items and stream results back to the driver as they finish. The project writes no scheduler:
with Ray, Ray Data schedules; inline is a plain loop for debugging and small tests.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
from typing import Any, Iterator, Optional, Protocol, Sequence

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


LOG_FILE_ENV = "CONVCORPUS_RAY_LOG"


def ray_log_file() -> str:
    """Where Ray's own messages go when the console is kept quiet."""
    path = os.environ.get(LOG_FILE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "convcorpus", "ray.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


@contextlib.contextmanager
def quiet_ray(verbose: bool) -> Iterator[None]:
    """Ray writes notices and warnings straight to the process's stderr (file descriptor 2, from
    Python and from its C++ core alike, e.g. "actor has constructor arguments in the object
    store"): unless verbose, file descriptor 2 points at the log while Ray runs. The build's own
    console writes to a copy of the original stderr (pipelines/progress.py), so it stays visible."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(ray_log_file(), "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def route_ray_logs(verbose: bool) -> None:
    """Ray's Python loggers (token authentication, actor arguments, progress bars disabled...)
    write to the log file unless verbose; their warnings stay out of the build's console."""
    if verbose:
        return
    handler = logging.FileHandler(ray_log_file())
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = False
    warnings.filterwarnings("ignore", module=r"ray(\..*)?")


class RayEngine:
    def __init__(self, cfg: EngineConfig, verbose: bool = False):
        import ray
        from ray.data import DataContext

        self._ray = ray
        self._started = False
        self._reaper: Optional[subprocess.Popen] = None
        self._quiet = contextlib.ExitStack()
        self._quiet.enter_context(quiet_ray(verbose))
        try:
            if not ray.is_initialized():
                route_ray_logs(verbose)
                project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                temp_dir = self._start_reaper(project_root) if cfg.address is None else None
                ray.init(
                    address=cfg.address,
                    num_cpus=cfg.num_cpus if cfg.address is None else None,
                    include_dashboard=False,
                    log_to_driver=verbose,
                    configure_logging=True,
                    logging_level="INFO" if verbose else "WARNING",
                    runtime_env={"env_vars": {"PYTHONPATH": project_root}} if cfg.address is None else None,
                    _temp_dir=temp_dir,
                )
                self._started = True
                route_ray_logs(verbose)
            ctx = DataContext.get_current()
            ctx.enable_progress_bars = False  # the build shows its own progress
            ctx.print_on_execution_start = False
            self.max_workers = max(1, int(ray.available_resources().get("CPU", 1)))
        except BaseException:
            self._stop_reaper()
            self._quiet.close()
            raise

    def _start_reaper(self, project_root: str) -> str:
        """A local Ray's session lives in a folder of this build's own; a watchdog process removes
        it and every Ray process that names it once this process ends, even by SIGKILL."""
        temp_dir = tempfile.mkdtemp(prefix="convcorpus-ray-", dir="/tmp")  # short: Ray's socket paths
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "pipelines.ray_reaper", temp_dir], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=project_root, start_new_session=True,
        )
        return temp_dir

    def _stop_reaper(self) -> None:
        if self._reaper is None:
            return
        assert self._reaper.stdin is not None
        self._reaper.stdin.close()
        try:
            self._reaper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        self._reaper = None

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
        try:
            if self._started:
                self._ray.shutdown()
        finally:
            self._stop_reaper()
            self._quiet.close()


def make_engine(cfg: EngineConfig, verbose: bool = False) -> Engine:
    return RayEngine(cfg, verbose) if cfg.kind == "ray" else InlineEngine()
