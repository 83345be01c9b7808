"""python -m catalog.query --out ./corpus "select lang, count(*) from pairs group by all"

Runs SQL over the current corpus version, local or on object storage (read through fsspec, so
no DuckDB extension or network download is needed)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from catalog.store import Store
from catalog.views import connect


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m catalog.query", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="corpus root (local directory or s3://bucket/prefix)")
    p.add_argument("sql", help="a query over recordings, speakers, utterances, turns, pairs, windows, "
                               "codec_chunks, shards, rejects, builds")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    args = p.parse_args(argv)
    con = connect(Store(args.out))
    rel = con.sql(args.sql)
    if args.csv:
        rel.to_df().to_csv(sys.stdout, index=False) if hasattr(rel, "to_df") else None
        return 0
    cols = rel.columns
    rows = rel.fetchall()
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(str(c)) for i, c in enumerate(cols)]
    print("  ".join(str(c).ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
