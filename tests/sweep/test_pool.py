"""The local pool: a worker SIGKILLed mid-item is replaced, and every item is in the tables exactly once."""

from __future__ import annotations

from _sweepfixture import layer_values, reference_values

from camanim.sweep import read_table


def test_a_killed_worker_is_replaced_and_every_item_is_there_once(finished, reference):
    assert len(finished["killed"]) == 2  # both workers, one of them mid-item
    assert finished["summary"]["restarts"] >= 1
    images = read_table(finished["out"], "images").to_pylist()
    keys = [r["key"] for r in images]
    assert sorted(keys) == sorted(reference["rows"]) and len(set(keys)) == len(keys)
    # the item that was running when its worker died was run again, and counted
    assert max(r["attempts"] for r in images) == 2
    assert layer_values(read_table(finished["out"], "layers").to_pylist()) == reference_values(reference)


def test_tables_are_whole_at_every_progress_report(finished):
    """Read back at each report while the sweep ran: one images row per finished item, and its layers (8 rows
    per good item: 2 methods x 4 layers, none for a failed one)."""
    reads = finished["reads"]
    assert [d for d, _, _ in reads] == list(range(6))
    for done, n_images, n_layers in reads:
        assert n_images == done
        assert n_layers % 8 == 0 and n_layers <= 8 * n_images
