"""python -m pipelines.build --source <fisher|callhome|demo> [--input DIR ...] --out DIR|s3://...

Builds (or incrementally updates) a conversational pair corpus: WebDataset shards, a Parquet
catalog with DuckDB views, and a build record.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from catalog.lock import BuildLockedError
from pipelines.config import ConfigError, load_build_config
from pipelines.report import Reporter
from pipelines.run import run_build
from stages.sources import SOURCES


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=sorted(SOURCES), help="source recipe (or 'source:' in the manifest)")
    p.add_argument("--manifest", help="YAML manifest (see manifests/); flags override it")
    p.add_argument("--input", action="append", default=[], help="source audio directory (repeatable)")
    p.add_argument("--transcripts", action="append", default=[], help="transcript directory (repeatable; default: search --input)")
    p.add_argument("--lang", help="language code of the source's recordings")
    p.add_argument("--license", dest="license_", help="license string recorded with every pair")
    p.add_argument("--out", required=True, help="corpus root: a local directory or s3://bucket/prefix")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline setting, e.g. segment.context_turns=2 or shard.target_shard_mb=64")
    p.add_argument("--engine", choices=["ray", "inline"], help="ray (default) or inline (one process, for debugging)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    reporter = Reporter()
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
        run_build(cfg, reporter)
    except ConfigError as e:
        reporter.console.print(f"[red]configuration error:[/] {e}")
        return 2
    except BuildLockedError as e:
        reporter.console.print(f"[red]not started:[/] {e}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
