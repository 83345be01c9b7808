"""python -m catalog.compare A B: are two corpora the same data?

Compares the current versions of two corpus roots (local or s3://): every catalog table's rows
(sorted; `builds`, the record of the build runs themselves, is left out) and every shard's
members, byte for byte. Version names are the one thing allowed to differ: a version id is a
hash of its inputs' identities, which include file modification times, so the same input
rewritten gives the same data under another name; each corpus's own version ids are replaced
by a placeholder before comparing (in catalog rows and in the shards' JSON members). Prints
what differs and exits 1, or "identical" and exits 0. Used to check that a refactor changed no
byte of the demo corpus.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
from typing import Any, Optional, Sequence

from catalog.schema import TABLES
from catalog.store import Store
from catalog.versions import current
from catalog.views import connect

# `builds`, `phase_runs`: ids and times of the build runs themselves; `shards`: compared member by
# member below (its sha256 column hashes the version name the shards' JSON members carry).
SKIPPED_TABLES = {"builds", "phase_runs", "shards"}


PLACEHOLDER = "v-<version>"


def version_names(root: str) -> list[str]:
    version = current(Store(root))
    return sorted({version.version, *(p.part_id for p in version.parts)}, key=len, reverse=True)


def _normalize(value: Any, names: list[str]) -> Any:
    if isinstance(value, str):
        for n in names:
            value = value.replace(n, PLACEHOLDER)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_normalize(v, names) for v in value)
    return value


def table_rows(root: str) -> dict[str, list[tuple]]:
    con = connect(Store(root))
    names = version_names(root)
    out = {}
    for table in TABLES:
        if table in SKIPPED_TABLES:
            continue
        rows = [_normalize(tuple(r), names) for r in con.execute(f'SELECT * FROM "{table}"').fetchall()]
        out[table] = sorted(rows, key=repr)
    return out


def shard_list(root: str) -> list[tuple[Any, ...]]:
    """(kind, samples, bytes, digest of the members with version names normalized) per shard."""
    store = Store(root)
    names = [n.encode() for n in version_names(root)]
    con = connect(store)
    out = []
    for path, kind, samples, size in con.execute("SELECT path, kind, num_samples, num_bytes FROM shards").fetchall():
        digest = hashlib.sha256()
        with store.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                data = tar.extractfile(member).read() if member.isfile() else b""
                if member.name.endswith(".json"):
                    for n in names:
                        data = data.replace(n, PLACEHOLDER.encode())
                digest.update(f"{member.name}|{member.mode}|{member.mtime}|{len(data)}|".encode())
                digest.update(hashlib.sha256(data).digest())
        out.append((kind, samples, size, digest.hexdigest()))
    return sorted(out)


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
    va, vb = current(Store(args.a)).version, current(Store(args.b)).version
    print("identical: " + ", ".join(f"{t} {len(r)}" for t, r in ta.items()) + f", shards {len(shard_list(args.a))}"
          + (f" (versions named {va} and {vb})" if va != vb else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
