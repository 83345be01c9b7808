"""python -m catalog.compare A B: are two corpora the same data?

Compares the current versions of two corpus roots (local or s3://): every catalog table's rows
(sorted, the build-record columns that name a build or a time left out: `builds` itself, and
nothing else), and every shard's kind, sample count, bytes and sha256 from the versions'
shard lists. Prints what differs and exits 1, or prints "identical" and exits 0. Used to check
that a refactor changed no byte of the demo corpus.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from catalog.schema import TABLES
from catalog.store import Store
from catalog.versions import current
from catalog.views import connect

SKIPPED_TABLES = {"builds"}  # ids and times of the build runs themselves


def table_rows(root: str) -> dict[str, list[tuple]]:
    con = connect(Store(root))
    out = {}
    for table in TABLES:
        if table in SKIPPED_TABLES:
            continue
        rows = con.execute(f'SELECT * FROM "{table}"').fetchall()
        out[table] = sorted(rows, key=repr)
    return out


def shard_list(root: str) -> list[tuple[Any, ...]]:
    con = connect(Store(root))
    cols = [r[0] for r in con.execute("DESCRIBE shards").fetchall()]
    keep = [c for c in ("kind", "num_samples", "num_bytes", "sha256") if c in cols]
    return sorted(con.execute(f"SELECT {', '.join(keep)} FROM shards").fetchall(), key=repr)


def compare(a: str, b: str, limit: int = 5) -> list[str]:
    """Differences between the corpora at `a` and `b` (empty when identical)."""
    problems: list[str] = []
    for root in (a, b):
        if current(Store(root)) is None:
            problems.append(f"{root}: no committed version")
    if problems:
        return problems
    ta, tb = table_rows(a), table_rows(b)
    for table in ta:
        ra, rb = ta[table], tb.get(table, [])
        if ra != rb:
            sa_, sb_ = set(map(repr, ra)), set(map(repr, rb))
            only_a = [r for r in ra if repr(r) not in sb_][:limit]
            only_b = [r for r in rb if repr(r) not in sa_][:limit]
            problems.append(f"{table}: {len(ra)} vs {len(rb)} rows; only in A: {only_a}; only in B: {only_b}")
    sa, sb = shard_list(a), shard_list(b)
    if sa != sb:
        problems.append(f"shards differ: A {sa[:limit]} ... B {sb[:limit]} ...")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m catalog.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    args = p.parse_args(argv)
    problems = compare(args.a, args.b)
    if problems:
        print("\n".join(problems))
        return 1
    ta = table_rows(args.a)
    print("identical: " + ", ".join(f"{t} {len(r)}" for t, r in ta.items()) + f", shards {len(shard_list(args.a))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
