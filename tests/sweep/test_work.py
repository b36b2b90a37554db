"""One item's work: an item's label read as the model's class (names matched case-insensitively, an
ambiguous or unknown one refused in one line, the item failed with it)."""

from __future__ import annotations

import pytest
from _sweepfixture import MODEL, SETTINGS

from camanim.errors import InputError
from camanim.sweep import SweepItem
from camanim.sweep.work import ItemWorker


@pytest.fixture(scope="module")
def worker() -> ItemWorker:
    return ItemWorker(SETTINGS, own_process=False)


def test_a_label_is_a_class_index_or_a_class_name_in_any_case(worker):
    loaded = worker.model(MODEL)
    assert [worker.target_of(loaded, t) for t in ("281", "tabby", "Tabby", "TABBY", None)] == [281, 281, 281, 281, None]
    with pytest.raises(InputError, match="^label class 1000 is out of range: the model has classes 0..999$"):
        worker.target_of(loaded, "1000")


def test_an_ambiguous_or_unknown_label_fails_its_item_with_one_line(worker):
    loaded = worker.model(MODEL)
    assert worker.target_of(loaded, "cardigan") == 474  # the exact spelling (264 is 'Cardigan', the corgi)
    with pytest.raises(InputError, match="^label 'CARDIGAN' names 2 classes of this model: 264 \\(Cardigan\\), 474"):
        worker.target_of(loaded, "CARDIGAN")
    item = SweepItem("sample:cat", "unicorn", MODEL, "0" * 64, "k" * 16)
    row = worker.run(item)["image"]
    assert (row["status"], row["error"]) == ("failed", "label 'unicorn' is not a class label of this model: give a "
                                                       "label or an index")
