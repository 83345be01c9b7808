"""Progress display while a build runs, and the summary at its end."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def console_stream() -> TextIO:
    """A copy of the process's stderr: while Ray runs quietly, file descriptor 2 points at its log
    (pipelines/engine.py), and the build's own progress must still reach the terminal."""
    return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, closefd=True)


class Reporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(file=console_stream(), stderr=True)

    def info(self, message: str) -> None:
        self.console.print(message)

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[..., None]]:
        """A progress bar for one stage; the yielded function advances it and shows counts."""
        progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=self.console,
            transient=False,
        )
        counts: dict[str, int] = {}
        with progress:
            task = progress.add_task(name, total=total, counts="")

            def advance(**increments: int) -> None:
                for k, v in increments.items():
                    counts[k] = counts.get(k, 0) + v
                text = " ".join(f"{k}={v}" for k, v in counts.items())
                progress.update(task, advance=1, counts=text)

            yield advance

    def summary(self, s: dict[str, Any]) -> None:
        table = Table(title=f"corpus {s['version']} ({s['status']})", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for label in ("recordings", "utterances", "turns", "pairs", "windows", "codec_chunks", "shards"):
            new = s["new"].get(label, 0)
            table.add_row(label, f"{s['totals'].get(label, 0):,}  (+{new:,} this build)")
        table.add_row("hours", f"{s['totals'].get('hours', 0):.2f} h of recordings, {s['totals'].get('ai_hours', 0):.2f} h of AI turns in pairs")
        rejects = s.get("rejects_by_reason") or {}
        table.add_row("rejects", ", ".join(f"{k}={v}" for k, v in sorted(rejects.items())) or "none")
        failed = s.get("failed") or []
        if failed:
            kinds: dict[str, int] = {}
            for f in failed:
                kinds[f["failure"]] = kinds.get(f["failure"], 0) + 1
            table.add_row("[red]failed[/]", f"{len(failed)} recording(s), not cached, done again by the next build: "
                          + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
        deferred = s.get("deferred") or []
        if deferred:
            table.add_row("deferred", f"{len(deferred)} download(s) past the build's time budget, resumed by the next build")
        phases = s.get("phases") or []
        if phases:
            table.add_row("time by phase", ", ".join(
                f"{name} {sec:.1f}s ({runs - cached}/{runs} run)" for name, sec, runs, cached in phases))
        for label in ("out", "catalog", "shard_index", "build_record"):
            table.add_row(label, str(s["paths"][label]))
        table.add_row("elapsed", f"{s['elapsed_s']:.1f}s")
        self.console.print(table)
