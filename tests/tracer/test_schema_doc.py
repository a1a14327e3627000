"""docs/schema.md documents every table and column the migrations create."""

from __future__ import annotations

import re
from pathlib import Path

import tracer

DOC = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text()


def test_every_table_and_column_is_documented():
    store = tracer.Store(":memory:")
    try:
        rows = store._con.execute(
            "SELECT table_name, column_name FROM information_schema.columns ORDER BY table_name").fetchall()
    finally:
        store.close()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", DOC, re.M | re.S))
    missing = []
    for table, column in rows:
        body = sections.get(table)
        if body is None:
            missing.append(f"table {table}")
        elif not re.search(rf"^\|[^|]*\b{column}\b[^|]*\|", body, re.M):
            missing.append(f"{table}.{column}")
    assert not missing, f"undocumented in docs/schema.md: {', '.join(missing)}"
