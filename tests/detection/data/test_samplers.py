"""Samplers and loaders: determinism, resuming, distributed shards (rank/world_size as args)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from detection.data import (AspectRatioBatchSampler, COCODataset, InferenceSampler,
                            RepeatFactorTrainingSampler, TrainingSampler, make_test_loader,
                            make_train_loader, build_transforms, collate, repeat_factors)
from detection.data.samplers import dist_rank_world_size


def _take(iterable, n):
    return list(itertools.islice(iter(iterable), n))


def test_training_sampler_is_seeded_and_each_epoch_a_permutation():
    a = _take(TrainingSampler(10, seed=3, rank=0, world_size=1), 30)
    assert a == _take(TrainingSampler(10, seed=3, rank=0, world_size=1), 30)
    assert a != _take(TrainingSampler(10, seed=4, rank=0, world_size=1), 30)
    for epoch in range(3):
        assert sorted(a[10 * epoch:10 * (epoch + 1)]) == list(range(10))
    assert a[:10] != a[10:20]  # a new permutation per epoch
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert a[:10] == expected
    assert _take(TrainingSampler(4, seed=0, shuffle=False, rank=0, world_size=1), 6) == [
        0, 1, 2, 3, 0, 1]


def test_training_sampler_shards_the_global_stream_across_ranks():
    full = _take(TrainingSampler(10, seed=7, rank=0, world_size=1), 40)
    ranks = [_take(TrainingSampler(10, seed=7, rank=r, world_size=3), 10) for r in range(3)]
    for r in range(3):
        assert ranks[r] == full[r::3][:10]
    # together the ranks' first 10 // 3 + ... positions cover the global stream without overlap
    interleaved = [ranks[i % 3][i // 3] for i in range(30)]
    assert interleaved == full[:30]


def test_inference_sampler_shards_without_duplicates():
    shards = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [len(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)] == [3, 3, 4]
    small = [list(InferenceSampler(2, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(small, [])) == [0, 1] and small[0] == []


def test_rank_defaults_and_validation():
    assert dist_rank_world_size() == (0, 1)  # no process group
    with pytest.raises(ValueError, match="rank 2"):
        TrainingSampler(5, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="non-empty"):
        TrainingSampler(0, seed=0)


def test_aspect_ratio_batches_are_homogeneous_in_arrival_order():
    groups = [0, 1, 0, 0, 1, 1, 1, 0]
    batches = list(AspectRatioBatchSampler(range(8), groups, 2))
    assert batches == [[0, 2], [1, 4], [5, 6], [3, 7]]
    infinite = AspectRatioBatchSampler(TrainingSampler(8, seed=1, rank=0, world_size=1),
                                       groups, 3)
    for batch in _take(infinite, 20):
        assert len(batch) == 3 and len({groups[i] for i in batch}) == 1


def test_collate_keeps_a_list_and_drops_none():
    a, b = {"image_id": 1}, {"image_id": 2}
    assert collate([a, None, b]) == [a, b]
    assert collate([None]) == []


@pytest.fixture(scope="module")
def train_set(synthetic_coco):
    return COCODataset(images=synthetic_coco.train_images,
                       annotations=synthetic_coco.train_annotations, train=True,
                       transforms=build_transforms(train=True, min_size=[48, 64], max_size=96,
                                                   flip_prob=0.5))


def _batches(loader, n):
    return [[(s["image_id"], tuple(s["image"].shape), s["boxes"]) for s in batch]
            for batch in _take(loader, n)]


def _assert_same(a, b):
    assert [[(i, shape) for i, shape, _ in batch] for batch in a] == [
        [(i, shape) for i, shape, _ in batch] for batch in b]
    for batch_a, batch_b in zip(a, b):
        for (_, _, boxes_a), (_, _, boxes_b) in zip(batch_a, batch_b):
            torch.testing.assert_close(boxes_a, boxes_b)


def test_train_loader_resumes_with_the_same_batches(train_set):
    first = _batches(make_train_loader(train_set, batch_size=2, num_workers=0, seed=5), 8)
    resumed = _batches(make_train_loader(train_set, batch_size=2, num_workers=0, seed=5,
                                          start_iter=5), 3)
    assert [[i for i, _, _ in b] for b in resumed] == [[i for i, _, _ in b] for b in first[5:]]
    _assert_same(first[5:], resumed)  # and the same scales and flips after resuming
    again = _batches(make_train_loader(train_set, batch_size=2, num_workers=0, seed=5), 8)
    _assert_same(first, again)  # same seed: same images, scales, flips
    sizes = train_set.image_sizes
    ids = train_set.image_ids.tolist()
    for batch in first:  # aspect grouping: one orientation per batch
        portrait = {bool(sizes[ids.index(i)][1] < sizes[ids.index(i)][0]) for i, _, _ in batch}
        assert len(portrait) == 1


def test_train_loader_with_workers_matches_its_index_stream(train_set):
    loader = make_train_loader(train_set, batch_size=2, num_workers=2, seed=5,
                                aspect_grouping=False)
    ids = [[i for i, _, _ in b] for b in _batches(loader, 4)]
    sampler = TrainingSampler(len(train_set), seed=5, rank=0, world_size=1)
    expected = [train_set.image_ids[j].item() for j in _take(sampler, 8)]
    assert sum(ids, []) == expected
    again = _batches(make_train_loader(train_set, batch_size=2, num_workers=2, seed=5,
                                        aspect_grouping=False), 4)
    assert [[i for i, _, _ in b] for b in again] == ids
    in_process = _batches(make_train_loader(train_set, batch_size=2, num_workers=0, seed=5,
                                             aspect_grouping=False), 4)
    _assert_same(again, in_process)  # augmentation does not depend on the worker count


def test_train_loader_shards_by_rank(train_set):
    per_rank = [[i for b in _batches(make_train_loader(
        train_set, batch_size=1, num_workers=0, seed=2, aspect_grouping=False,
        rank=r, world_size=2), 6) for i, _, _ in b] for r in range(2)]
    full = TrainingSampler(len(train_set), seed=2, rank=0, world_size=1)
    expected = [train_set.image_ids[j].item() for j in _take(full, 12)]
    assert per_rank[0] == expected[0::2] and per_rank[1] == expected[1::2]


def test_aspect_grouping_needs_image_sizes():
    with pytest.raises(TypeError, match="image_sizes"):
        make_train_loader(list(range(4)), batch_size=2, num_workers=0, seed=0)


def test_test_loader_covers_every_image_once_across_ranks(synthetic_coco):
    ds = COCODataset(images=synthetic_coco.val_images,
                     annotations=synthetic_coco.val_annotations, train=False)
    seen = [s["image_id"] for r in range(3)
            for b in make_test_loader(ds, batch_size=2, num_workers=0, rank=r, world_size=3)
            for s in b]
    assert seen == ds.image_ids.tolist() and len(seen) == 8


# ------------------------------------------------------------------------ repeat-factor sampling
def test_repeat_factors_by_hand():
    # image 0: classes {1, 2}; 1: {1}; 2: no box; 3: {1, 3, 3}. f(1) = 3/4, f(2) = f(3) = 1/4
    offsets, labels = np.array([0, 2, 3, 3, 6]), np.array([1, 2, 1, 1, 3, 3])
    # t = 0.5: r(1) = max(1, sqrt(0.5 / 0.75)) = 1, r(2) = r(3) = sqrt(0.5 / 0.25) = sqrt(2)
    np.testing.assert_allclose(repeat_factors(offsets, labels, threshold=0.5),
                               [2 ** 0.5, 1.0, 1.0, 2 ** 0.5])
    # t = 3: r(1) = sqrt(3 / 0.75) = 2, r(2) = r(3) = sqrt(3 / 0.25) = sqrt(12)
    np.testing.assert_allclose(repeat_factors(offsets, labels, threshold=3.0),
                               [12 ** 0.5, 2.0, 1.0, 12 ** 0.5])
    with pytest.raises(ValueError, match="> 0"):
        repeat_factors(offsets, labels, threshold=0.0)


def test_an_image_of_a_class_in_5_percent_of_images_is_drawn_over_twice_as_often():
    """100 images all hold class 1; images 0..4 also hold class 2 (f = 0.05). With t = 0.3,
    r = sqrt(0.3 / 0.05) = 2.449 for those five: per epoch each appears 2 or 3 times among
    95 + 5 * 2.449 = 107.2 draws on average, so 2.449 * 100 / 107.2 = 2.28 times as often per
    draw as under the uniform sampler."""
    per_image = [[1, 2]] * 5 + [[1]] * 95
    labels = np.concatenate(per_image)
    offsets = np.cumsum([0] + [len(x) for x in per_image])
    factors = repeat_factors(offsets, labels, threshold=0.3)
    np.testing.assert_allclose(factors[:5], 6 ** 0.5)
    assert (factors[5:] == 1).all()
    draws = 100 * 107
    rare = lambda sampler: np.isin(_take(sampler, draws), range(5)).mean()  # noqa: E731
    repeat = rare(RepeatFactorTrainingSampler(factors, seed=0, rank=0, world_size=1))
    uniform = rare(TrainingSampler(100, seed=0, rank=0, world_size=1))
    assert uniform == pytest.approx(0.05, abs=0.002)
    assert repeat / uniform >= 2
    assert repeat / uniform == pytest.approx(2.28, abs=0.1)


def test_repeat_factor_stream_is_seeded_sharded_and_resumable(train_set):
    factors = [1.0, 2.5, 1.0, 3.0]
    a = _take(RepeatFactorTrainingSampler(factors, seed=3, rank=0, world_size=1), 400)
    assert a == _take(RepeatFactorTrainingSampler(factors, seed=3, rank=0, world_size=1), 400)
    assert a != _take(RepeatFactorTrainingSampler(factors, seed=4, rank=0, world_size=1), 400)
    counts = np.bincount(a, minlength=4) / len(a)
    np.testing.assert_allclose(counts, np.array(factors) / sum(factors), atol=0.03)
    ranks = [_take(RepeatFactorTrainingSampler(factors, seed=3, rank=r, world_size=2), 200)
             for r in range(2)]
    assert ranks[0] == a[0::2] and ranks[1] == a[1::2]
    # the training loader with this sampler resumes with the very batches (images and
    # augmentation), as with the uniform one
    sampler = lambda: RepeatFactorTrainingSampler(  # noqa: E731
        [1.0 + (i % 3) for i in range(len(train_set))], seed=5, rank=0, world_size=1)
    first = _batches(make_train_loader(train_set, batch_size=2, num_workers=0, seed=5,
                                        sampler=sampler()), 6)
    resumed = _batches(make_train_loader(train_set, batch_size=2, num_workers=0, seed=5,
                                          start_iter=4, sampler=sampler()), 2)
    _assert_same(first[4:], resumed)
    with pytest.raises(ValueError, match=">= 1"):
        RepeatFactorTrainingSampler([1.0, 0.5], seed=0)


def test_config_builds_the_repeat_factor_sampler(train_set, synthetic_coco):
    from detection.config import load_config
    from detection.setup import build_train_sampler

    cfg = load_config(None, ["data.sampler=repeat_factor", "data.repeat_threshold=0.5"])
    sampler = build_train_sampler(cfg, train_set)
    data = json.loads(open(synthetic_coco.train_annotations).read())
    kept = set(train_set.image_ids.tolist())
    per_image = {i: set() for i in kept}
    for a in data["annotations"]:
        if a["image_id"] in per_image and not a.get("iscrowd"):
            per_image[a["image_id"]].add(a["category_id"])
    freq = {c: sum(c in s for s in per_image.values()) / len(kept)
            for c in set().union(*per_image.values())}
    expected = [max([1.0, *((0.5 / freq[c]) ** 0.5 for c in per_image[i])])
                for i in train_set.image_ids.tolist()]
    torch.testing.assert_close(sampler.int_part + sampler.frac_part,
                               torch.tensor(expected, dtype=torch.float64))
    assert type(build_train_sampler(load_config(), train_set)) is TrainingSampler
