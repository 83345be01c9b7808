"""python -m pipelines.build --source <fisher|callhome|demo> [--input DIR ...] --out DIR|s3://...

Builds (or incrementally updates) a conversational pair corpus: WebDataset shards, a Parquet
catalog with DuckDB views, and a build record.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Optional, Sequence

from catalog.lock import BuildLockedError
from pipelines.config import ConfigError, check_paths, load_build_config
from pipelines.progress import Reporter
from stages.errors import failure_kind
from stages.sources import SOURCES


class _Parser(argparse.ArgumentParser):
    """Usage mistakes exit 2 with one line, like every other configuration error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f"{message} (see --help)")


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: configuration error: {' '.join(message.split())}\n")
    sys.exit(2)


PROG = "python -m pipelines.build"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=sorted(SOURCES), help="source recipe (or 'source:' in the manifest)")
    p.add_argument("--manifest", help="YAML manifest (see manifests/); flags override it")
    p.add_argument("--input", action="append", default=[], help="source audio directory (repeatable)")
    p.add_argument("--transcripts", action="append", default=[], help="transcript directory (repeatable; default: search --input)")
    p.add_argument("--lang", help="language code of the source's recordings")
    p.add_argument("--license", dest="license_", help="license string recorded with every pair")
    p.add_argument("--out", required=True, help="corpus root: a local directory or s3://bucket/prefix")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting (YAML value): pipeline, e.g. segment.context_turns=2 or shard.target_shard_mb=64; "
                   "source option under the source's name, e.g. local.speakers=2 or podcasts.fetch.timeout_s=10; "
                   "engine, e.g. engine.cpus_per_recording=2")
    p.add_argument("--engine", choices=["ray", "inline"], help="ray (default) or inline (one process, for debugging)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray")
    p.add_argument("--retry-rejects", nargs="*", metavar="REASON",
                   help="run recordings whose cached reject has one of these reasons again (no reason: every reject)")
    p.add_argument("--verbose", action="store_true", help="also show Ray's own log messages on the console")
    return p.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so the engine shuts Ray down and the build lock is released.
    raise SystemExit(128 + signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    source_options = {"audio": args.input, "transcripts": args.transcripts, "lang": args.lang, "license": args.license_}
    try:
        cfg = load_build_config(
            source=args.source,
            out=args.out,
            manifest=args.manifest,
            source_options=source_options,
            overrides=args.set,
            engine={"kind": args.engine, "address": args.ray_address, "num_cpus": args.num_cpus},
        )
        check_paths(cfg)  # before anything (the output folder, its lock) is created
    except ConfigError as e:
        _fail(str(e))
    from pipelines.run import BuildFailed, run_build  # heavy: only once the configuration holds

    reporter = Reporter()
    try:
        run_build(cfg, reporter, retry_rejects=args.retry_rejects, verbose=args.verbose)
    except BuildFailed as e:
        reporter.console.print(f"[red]build failed:[/] {e}")
        return 1
    except OSError as e:  # the output's storage failed (disk full, read-only, unreachable)
        reporter.console.print(f"[red]build failed:[/] {failure_kind(e)}: {e}; nothing was committed, what "
                               "succeeded is cached: run the build again once the cause is fixed")
        return 1
    except ConfigError as e:
        _fail(str(e))
    except BuildLockedError as e:
        reporter.console.print(f"[red]not started:[/] {e}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
