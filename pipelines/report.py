"""Progress display while a build runs, and the summary at its end."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class Reporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

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
        for label in ("out", "catalog", "shard_index", "build_record"):
            table.add_row(label, str(s["paths"][label]))
        table.add_row("elapsed", f"{s['elapsed_s']:.1f}s")
        self.console.print(table)
