"""Top-1 / top-5 error on hand-made scores (ties count as errors), 10-crop averaging, the
evaluator over batches and its dataset loop."""

import pytest
import torch
from torch import nn

from detection.pretrain.evaluation import (ClassificationEvaluator, classify_batch,
                                           classify_dataset)
from detection.pretrain.model import label_ranks

# 6 classes, 5 images; the true class's place among the scores is written next to each row
SCORES = torch.tensor([
    [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # label 0: first          -> top-1 right
    [1.0, 9.0, 8.0, 0.0, 0.0, 0.0],  # label 2: second         -> top-1 wrong, top-5 right
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # label 0: sixth (last)   -> both wrong
    [5.0, 5.0, 1.0, 1.0, 1.0, 1.0],  # label 1: tied first     -> top-1 wrong (a tie is an error)
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # label 3: all tied       -> both wrong (5 rank above it)
])
LABELS = torch.tensor([0, 2, 0, 1, 3])


def test_ranks_and_errors_by_hand():
    assert label_ranks(SCORES, LABELS).tolist() == [0, 1, 5, 1, 5]
    evaluator = ClassificationEvaluator(num_classes=6)
    samples = [{"label": LABELS[i], "index": i} for i in range(5)]
    evaluator.process(samples[:2], SCORES[:2])  # two batches, as a loader gives them
    evaluator.process(samples[2:], SCORES[2:])
    result = evaluator.evaluate()
    assert result == pytest.approx({"top1_err": 80.0, "top1": 20.0, "top5_err": 40.0,
                                    "top5": 60.0, "num_images": 5.0})


def test_topk_needs_more_than_k_classes_and_scores_must_fit():
    evaluator = ClassificationEvaluator(num_classes=5)
    evaluator.process([{"label": torch.tensor(4), "index": 0}], torch.tensor([[0, 1, 2, 3, 4.]]))
    assert evaluator.evaluate() == {"top1_err": 0.0, "top1": 100.0, "num_images": 1.0}
    with pytest.raises(ValueError, match=r"scores of shape \(1, 4\) for 1 samples and 5"):
        evaluator.process([{"label": torch.tensor(0), "index": 1}], torch.zeros(1, 4))
    with pytest.raises(RuntimeError, match="no image was processed"):
        ClassificationEvaluator(num_classes=5).evaluate()


class _PixelModel(nn.Module):
    """Logits = the mean of each colour channel, times 10 (3 classes)."""

    def forward(self, x):
        return 10 * x.float().mean(dim=(2, 3))


def test_ten_crops_average_the_crops_probabilities():
    crops = torch.zeros(2, 10, 3, 4, 4)
    crops[0, :3, 0] = 1.0  # image 0: 3 crops say class 0 strongly ...
    crops[0, 3:, 1] = 0.2  # ... 7 crops say class 1 mildly
    crops[1, :, 2] = 1.0
    probs = classify_batch(_PixelModel(), crops)
    logits = 10 * crops.mean(dim=(3, 4))  # (2, 10, 3)
    assert torch.allclose(probs, logits.softmax(-1).mean(1))
    # averaging probabilities is not averaging logits: here they disagree
    assert probs[0].argmax() == 1 and logits[0].mean(0).argmax() == 0
    assert probs[1].argmax() == 2


def test_classify_dataset_over_a_loader():
    samples = [{"image": torch.zeros(3, 2, 2), "label": torch.tensor(i % 3), "index": i}
               for i in range(6)]
    for s in samples:
        s["image"][s["index"] % 3 if s["index"] < 4 else 0] = 1.0  # images 4, 5 look like 0
    loader = [samples[:4], [], samples[4:]]  # an empty batch: all its images were bad
    result = classify_dataset(_PixelModel(), loader, ClassificationEvaluator(num_classes=3),
                              device=torch.device("cpu"))
    assert result["top1_err"] == pytest.approx(100 * 2 / 6) and result["num_images"] == 6
