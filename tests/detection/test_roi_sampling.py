"""Balanced sampler: counts per image, shortage filling, ignored labels, uniform choice."""
import torch

from detection.roi_sampling import BalancedSampler


def _labels(num_pos: int, num_neg: int, num_ignored: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(num_ignored)])
    return labels[torch.randperm(len(labels))].long()


def test_counts_per_image():
    torch.manual_seed(0)
    sampler = BalancedSampler(batch_size_per_image=256, positive_fraction=0.25)
    # (#pos, #neg) -> (sampled pos, sampled neg): at most 256 * 0.25 = 64 positives, the rest
    # of the 256 filled with negatives while they last
    cases = [((10, 1000), (10, 246)), ((100, 1000), (64, 192)), ((300, 20), (64, 20)),
             ((0, 50), (0, 50)), ((0, 0), (0, 0))]
    rows = [torch.cat([_labels(p, n, 30), -torch.ones(1400 - p - n - 30).long()])
            for (p, n), _ in cases]
    labels = torch.stack(rows)  # (5, 1400), padded with -1 (ignored)
    pos, neg = sampler(labels)
    for i, (_, (want_pos, want_neg)) in enumerate(cases):
        assert int(pos[i].sum()) == want_pos
        assert int(neg[i].sum()) == want_neg
    assert bool((labels[pos] >= 1).all()) and bool((labels[neg] == 0).all())
    assert not bool((pos & neg).any())


def test_class_labels_count_as_positive():
    sampler = BalancedSampler(batch_size_per_image=8, positive_fraction=0.5)
    labels = torch.tensor([[3, 7, 1, 0, 0, -1, 0, 0, 0, 0, 0, 0]])
    pos, neg = sampler(labels)
    assert pos[0].nonzero().squeeze(1).tolist() == [0, 1, 2]  # 3 < 8 * 0.5: all of them
    assert int(neg.sum()) == 5 and not bool(neg[0, 5])


def test_choice_is_uniform():
    torch.manual_seed(0)
    sampler = BalancedSampler(batch_size_per_image=4, positive_fraction=0.5)
    labels = torch.tensor([[1] * 10 + [0] * 10])
    counts = torch.zeros(20)
    for _ in range(400):
        pos, neg = sampler(labels)
        assert int(pos.sum()) == 2 and int(neg.sum()) == 2
        counts += (pos | neg)[0].float()
    # each candidate is drawn with probability 2/10: 80 times expected in 400 draws
    assert bool((counts > 50).all()) and bool((counts < 110).all())
