"""The sweep's Parquet tables: readable at every moment, before the first item too."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from camanim.sweep.tables import IMAGES, LAYERS, create_tables


def test_the_tables_read_empty_before_any_item_finishes(tmp_path: Path) -> None:
    """(review) ``pq.read_table(out / "layers")`` 35 s into a sweep raised FileNotFoundError."""
    create_tables(tmp_path)
    for name in (IMAGES, LAYERS):
        assert pq.read_table(tmp_path / name).num_rows == 0
    create_tables(tmp_path)  # again (a resume): nothing changes, nothing fails
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([IMAGES, LAYERS])
