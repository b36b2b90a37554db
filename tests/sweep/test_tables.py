"""The sweep's Parquet tables: readable at every moment, before the first item too."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from camanim.sweep.tables import IMAGE_SCHEMA, IMAGES, LAYER_SCHEMA, LAYERS, create_tables


def test_the_tables_read_empty_before_any_item_finishes(tmp_path: Path) -> None:
    """(review) ``pq.read_table(out / "layers")`` 35 s into a sweep raised FileNotFoundError; then it read a
    table with no columns: now every column is there, with its type, before the first item."""
    create_tables(tmp_path)
    for name, schema in ((IMAGES, IMAGE_SCHEMA), (LAYERS, LAYER_SCHEMA)):
        table = pq.read_table(tmp_path / name)
        assert table.num_rows == 0 and table.schema.equals(schema, check_metadata=False)
    create_tables(tmp_path)  # again (a resume): nothing changes, nothing fails
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([IMAGES, LAYERS])
