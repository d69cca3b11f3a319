"""Label <-> category id maps between class lists (detection/data/classes.py)."""
import pytest
import torch

from detection.data import (category_id_to_label, classes_from_categories, label_to_category_id,
                            relabel_table)

CLASSES = classes_from_categories([{"id": 90, "name": "toothbrush"}, {"id": 5, "name": "bus"},
                                   {"id": 17, "name": "cat"}])


def test_classes_are_ordered_by_category_id():
    assert CLASSES == [{"id": 5, "name": "bus"}, {"id": 17, "name": "cat"},
                       {"id": 90, "name": "toothbrush"}]


def test_label_and_category_id_maps():
    assert [label_to_category_id(CLASSES, k) for k in (1, 2, 3)] == [5, 17, 90]
    assert label_to_category_id(CLASSES, torch.tensor([3, 1, 2])).tolist() == [90, 5, 17]
    assert [category_id_to_label(CLASSES, c) for c in (5, 17, 90)] == [1, 2, 3]
    with pytest.raises(ValueError, match="category id 6"):
        category_id_to_label(CLASSES, 6)
    with pytest.raises(ValueError, match="label 4 outside 1..3"):
        label_to_category_id(CLASSES, 4)


def test_relabel_table_maps_through_category_ids():
    model = [{"id": 1, "name": "person"}, {"id": 5, "name": "bus"}, {"id": 12, "name": "N/A"},
             {"id": 90, "name": "toothbrush"}]
    table = relabel_table(model, CLASSES)
    # background 0 -> 0; person (absent) -> 0; bus -> 1; N/A -> 0; toothbrush -> 3
    assert table.tolist() == [0, 0, 1, 0, 3] and table.dtype == torch.int64
