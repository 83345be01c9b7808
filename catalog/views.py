"""catalog.duckdb: DuckDB views over exactly the Parquet files of the current version.

Views list their files explicitly, so files of an uncommitted build are never read. A local
corpus gets absolute paths (the database works from any directory). An object-store corpus
gets s3:// URLs: the duckdb CLI reads them through its httpfs extension, and
`python -m catalog.query` reads them through fsspec with no extension needed.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Collection, Optional

import duckdb

from catalog.schema import TABLES, arrow_schema
from catalog.store import Store
from catalog.versions import Version, current

CATALOG_DB = "catalog.duckdb"
STORAGE_VERSION = "v1.0.0"


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


# Tables of every build rather than of a version: each file is written whole, by a finished build.
PER_BUILD_TABLES = ("builds", "phase_runs")


def view_statements(version: Optional[Version], locate: Callable[[str], str], per_build: Collection[str]) -> list[str]:
    """One view per table, over exactly the current version's files. The per-build tables
    (`per_build`: those with at least one file) are read with a glob."""
    statements = []
    for table, cls in TABLES.items():
        files = version.files(table) if version else []
        if table in per_build:
            select = f"SELECT * FROM read_parquet('{locate(f'catalog/{table}/*.parquet')}', union_by_name=true)"
        elif files:
            select = f"SELECT * FROM read_parquet({_sql_list([locate(f) for f in files])}, union_by_name=true)"
        else:
            cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS \"{f.name}\"" for f in arrow_schema(cls))
            select = f"SELECT {cols} WHERE false"
        statements.append(f'CREATE OR REPLACE VIEW "{table}" AS {select}')
    return statements


def per_build_tables(store: Store) -> list[str]:
    return [t for t in PER_BUILD_TABLES if store.list(f"catalog/{t}")]


def _duck_type(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_int64(arrow_type):
        return "BIGINT"
    if pa.types.is_float64(arrow_type):
        return "DOUBLE"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_list(arrow_type):
        return _duck_type(arrow_type.value_type) + "[]"
    if pa.types.is_struct(arrow_type):
        inner = ", ".join(f'"{f.name}" {_duck_type(f.type)}' for f in arrow_type)
        return f"STRUCT({inner})"
    raise TypeError(arrow_type)


def _read_through_fsspec(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """Object-store paths are read with the store's own fsspec filesystem (credentials from
    the environment), not DuckDB's httpfs extension, which would be downloaded at run time."""
    if store.is_local:
        return
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.register_filesystem(store.fs)


def write_catalog_db(store: Store, version: Optional[Version]) -> None:
    """(Re)create catalog.duckdb for a version, replacing the old one atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, CATALOG_DB)
        con = duckdb.connect()
        try:
            # An older storage format, so the duckdb CLIs users already have can open it.
            con.execute(f"ATTACH '{path}' AS catalog (STORAGE_VERSION '{STORAGE_VERSION}')")
            con.execute("USE catalog")
            _read_through_fsspec(con, store)
            for stmt in view_statements(version, store.uri, per_build_tables(store)):
                con.execute(stmt)
        finally:
            con.close()
        with open(path, "rb") as f:
            store.write_bytes(CATALOG_DB, f.read())


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the current version's views, reading through fsspec, so it
    works for object storage without DuckDB extensions."""
    con = duckdb.connect()
    _read_through_fsspec(con, store)
    for stmt in view_statements(current(store), store.uri, per_build_tables(store)):
        con.execute(stmt)
    return con
