"""Writing catalog tables as Parquet files through the store."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.schema import arrow_schema
from catalog.store import Store


def write_table(store: Store, rel_path: str, cls: type, table: pa.Table | None) -> None:
    """Write one Parquet file of a catalog table (an empty table still gets a file with its
    schema, so every view always has something typed to read)."""
    schema = arrow_schema(cls)
    if table is None:
        table = schema.empty_table()
    table = table.select(schema.names).cast(schema)
    with store.atomic_writer(rel_path) as f:
        pq.write_table(table, f, compression="zstd")


def read_table(store: Store, rel_path: str) -> pa.Table:
    with store.open(rel_path) as f:
        return pq.read_table(f)
