"""Tests for clipbench.metrics against small cases whose expected values are worked out by hand."""

from __future__ import annotations

import pytest
import torch

from clipbench.metrics import (
    classification_report,
    mean_per_class_recall,
    per_class_recall,
    top_confusions,
    topk_accuracy,
)


def one_hot_logits(predictions: list[int], num_classes: int) -> torch.Tensor:
    """Logits whose argmax is ``predictions[i]`` for image i (1.0 there, 0.0 elsewhere)."""
    logits = torch.zeros(len(predictions), num_classes)
    logits[torch.arange(len(predictions)), torch.tensor(predictions)] = 1.0
    return logits


def targets_of(labels: list[int]) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.long)


# Six classes, four images. The rank of the target is the number of classes ahead of it:
#   image 0: target 0 has the highest logit            -> rank 0
#   image 1: logits fall from class 0 to 5, target 4  -> rank 4
#   image 2: same logits, target 5                     -> rank 5
#   image 3: target 3 has the only non-zero logit      -> rank 0
RANKED_LOGITS = torch.tensor([
    [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],
    [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
    [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
])
RANKED_TARGETS = targets_of([0, 4, 5, 3])


def test_top1_hand_case():
    # Ranks 0, 4, 5, 0: two of four are rank 0, so top-1 = 2/4.
    assert topk_accuracy(RANKED_LOGITS, RANKED_TARGETS, 1) == pytest.approx(0.5)


def test_top5_hand_case():
    # Ranks 0, 4, 5, 0: three of four are below 5, so top-5 = 3/4.
    assert topk_accuracy(RANKED_LOGITS, RANKED_TARGETS, 5) == pytest.approx(0.75)


def test_topk_every_k():
    # A target of rank r is a hit for every k > r. Ranks 0, 4, 5, 0:
    # k=1..4 -> 2/4, k=5 -> 3/4, k=6 -> 4/4.
    expected = {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.75, 6: 1.0}
    for k, accuracy in expected.items():
        assert topk_accuracy(RANKED_LOGITS, RANKED_TARGETS, k) == pytest.approx(accuracy), f"k={k}"


def test_topk_rejects_k_above_classes():
    with pytest.raises(ValueError, match="top-7 accuracy needs at least 7 classes, got 6"):
        topk_accuracy(RANKED_LOGITS, RANKED_TARGETS, 7)


def test_topk_rejects_k_zero():
    with pytest.raises(ValueError, match="k of at least 1, got 0"):
        topk_accuracy(RANKED_LOGITS, RANKED_TARGETS, 0)


def test_topk_rejects_empty_logits():
    with pytest.raises(ValueError, match="no predictions"):
        topk_accuracy(torch.zeros(0, 6), targets_of([]), 1)


def test_topk_rejects_mismatched_targets():
    # One target for four images would otherwise broadcast against every row.
    with pytest.raises(ValueError, match=r"targets must have shape \(4,\).*got \(1,\)"):
        topk_accuracy(RANKED_LOGITS, targets_of([0]), 1)


def test_topk_rejects_nan_logits():
    logits = RANKED_LOGITS.clone()
    logits[1, 2] = float("nan")

    with pytest.raises(ValueError, match="NaN"):
        topk_accuracy(logits, RANKED_TARGETS, 1)


# Ties: a tied class with the lower index ranks first, as torch.argmax picks the first maximum.
#   [2, 2, 2, 2], target 0 -> rank 0 (nothing before it)
#   [2, 2, 2, 2], target 3 -> rank 3 (classes 0, 1, 2 tie and come first)
#   [1, 3, 3, 0], target 2 -> rank 1 (class 1 ties and comes first)
TIED_LOGITS = torch.tensor([
    [2.0, 2.0, 2.0, 2.0],
    [2.0, 2.0, 2.0, 2.0],
    [1.0, 3.0, 3.0, 0.0],
])
TIED_TARGETS = targets_of([0, 3, 2])


def test_ties_rank_lower_index_first():
    # Ranks 0, 3, 1: top-1 hits 1/3, top-2 hits 2/3, top-3 hits 2/3, top-4 hits 3/3.
    expected = {1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 1.0}
    for k, accuracy in expected.items():
        assert topk_accuracy(TIED_LOGITS, TIED_TARGETS, k) == pytest.approx(accuracy), f"k={k}"


def test_ties_top1_matches_argmax():
    # Eight equal logits: argmax returns class 0, so a target of 6 is a miss. torch.topk(1)
    # returns index 6 for this row on CPU, so a top-1 taken from topk would count a hit.
    logits = torch.zeros(1, 8)
    targets = targets_of([6])

    assert logits.argmax(dim=1).tolist() == [0]
    assert topk_accuracy(logits, targets, 1) == 0.0


def test_ties_duplicate_columns_report():
    # Classes 1 and 2 have identical logit columns, as two classes with the same name and
    # prompts get (ImageNet's two "missile" synsets). Every image of class 2 is predicted
    # as class 1, so class 2 has recall 0 and top-1 agrees with the per-class recalls.
    logits = torch.tensor([
        [0.1, 0.7, 0.7],  # target 1 -> predicted 1
        [0.1, 0.7, 0.7],  # target 2 -> predicted 1
        [0.9, 0.2, 0.2],  # target 0 -> predicted 0
        [0.1, 0.6, 0.6],  # target 2 -> predicted 1
    ])
    targets = targets_of([1, 2, 0, 2])

    report = classification_report(logits, targets)

    # Correct: images 0 and 2, so top-1 = 2/4.
    assert report.top1 == pytest.approx(0.5)
    # Recalls: class 0 1/1, class 1 1/1, class 2 0/2 -> mean (1 + 1 + 0) / 3.
    assert report.per_class_recall == pytest.approx({0: 1.0, 1: 1.0, 2: 0.0})
    assert report.mean_per_class_recall == pytest.approx(2 / 3)
    assert report.confusions == [(2, 1, 2)]


# Imbalanced case, four classes, class 3 absent from the targets:
#   class 0: 3 images, predicted 0, 0, 1 -> recall 2/3
#   class 1: 2 images, predicted 1, 0    -> recall 1/2
#   class 2: 1 image,  predicted 0       -> recall 0
IMBALANCED_TARGETS = targets_of([0, 0, 0, 1, 1, 2])
IMBALANCED_PREDICTIONS = targets_of([0, 0, 1, 1, 0, 0])


def test_per_class_recall_hand_case():
    recalls = per_class_recall(IMBALANCED_PREDICTIONS, IMBALANCED_TARGETS, 4)

    assert recalls == pytest.approx({0: 2 / 3, 1: 1 / 2, 2: 0.0})


def test_per_class_recall_absent_class():
    # Class 3 has no image and class 0 is predicted but never a target: both lack a recall.
    # Class 1: images 0 and 1, predicted 0 and 1 -> 1/2. Class 2: image 2, predicted 1 -> 0.
    recalls = per_class_recall(targets_of([0, 1, 1]), targets_of([1, 1, 2]), 4)

    assert sorted(recalls) == [1, 2]
    assert recalls[1] == pytest.approx(0.5)
    assert recalls[2] == pytest.approx(0.0)


def test_mean_per_class_recall_hand_case():
    # (2/3 + 1/2 + 0) / 3 = (7/6) / 3 = 7/18
    assert mean_per_class_recall(IMBALANCED_PREDICTIONS, IMBALANCED_TARGETS, 4) == pytest.approx(7 / 18)


def test_mean_recall_differs_from_top1():
    # Class 0 has 4 images, all correct. Class 1 has 1 image, predicted as 0.
    # top-1 = 4/5 = 0.8, but mean per-class recall = (1 + 0) / 2 = 0.5.
    targets = targets_of([0, 0, 0, 0, 1])
    logits = one_hot_logits([0, 0, 0, 0, 0], 3)

    report = classification_report(logits, targets)

    assert report.top1 == pytest.approx(0.8)
    assert report.mean_per_class_recall == pytest.approx(0.5)


def test_mean_recall_equals_top1_balanced():
    # Two images per class: class 0 both right, class 1 one right, class 2 none right.
    # top-1 = 3/6 = 0.5 and mean recall = (1 + 0.5 + 0) / 3 = 0.5.
    targets = targets_of([0, 0, 1, 1, 2, 2])
    logits = one_hot_logits([0, 0, 1, 2, 0, 1], 3)

    report = classification_report(logits, targets)

    assert report.top1 == pytest.approx(0.5)
    assert report.mean_per_class_recall == pytest.approx(0.5)


def test_mean_recall_rejects_empty():
    with pytest.raises(ValueError, match="no predictions"):
        mean_per_class_recall(targets_of([]), targets_of([]), 3)


# Mistakes (target -> predicted) in this case:
#   0 -> 1 twice, 1 -> 0 once, 2 -> 0 twice, 2 -> 1 once.
# The other two images (one of class 0, one of class 1) are correct.
CONFUSION_TARGETS = targets_of([0, 0, 0, 1, 1, 2, 2, 2])
CONFUSION_PREDICTIONS = targets_of([1, 1, 0, 0, 1, 0, 0, 1])


def test_confusions_counts_and_order():
    # Most frequent first, and equal counts in (target, predicted) order.
    confusions = top_confusions(CONFUSION_PREDICTIONS, CONFUSION_TARGETS, 10)

    assert confusions == [(0, 1, 2), (2, 0, 2), (1, 0, 1), (2, 1, 1)]


def test_confusions_limited_to_n():
    assert top_confusions(CONFUSION_PREDICTIONS, CONFUSION_TARGETS, 2) == [(0, 1, 2), (2, 0, 2)]


def test_confusions_zero_n():
    assert top_confusions(CONFUSION_PREDICTIONS, CONFUSION_TARGETS, 0) == []


def test_confusions_all_correct():
    targets = targets_of([0, 1, 2])

    assert top_confusions(targets.clone(), targets, 5) == []


def test_report_top5_none_below_five():
    # Four classes: top-5 cannot be computed, so the report leaves it out.
    report = classification_report(one_hot_logits([0, 1, 2, 3], 4), targets_of([0, 1, 2, 3]))

    assert report.top5 is None
    assert report.top1 == pytest.approx(1.0)


def test_report_top5_at_five_classes():
    # Five classes: top-5 covers every class, so every image is a hit.
    report = classification_report(one_hot_logits([1, 2], 5), targets_of([0, 0]))

    assert report.top5 == pytest.approx(1.0)
    assert report.top1 == pytest.approx(0.0)


def test_report_hand_case():
    # RANKED case: predictions (argmax) are 0, 0, 0, 3 for targets 0, 4, 5, 3.
    report = classification_report(RANKED_LOGITS, RANKED_TARGETS, num_confusions=5)

    assert report.top1 == pytest.approx(0.5)
    assert report.top5 == pytest.approx(0.75)
    # Recalls: class 0 1/1, class 3 1/1, class 4 0/1, class 5 0/1 -> mean 2/4.
    assert report.per_class_recall == pytest.approx({0: 1.0, 3: 1.0, 4: 0.0, 5: 0.0})
    assert report.mean_per_class_recall == pytest.approx(0.5)
    assert report.per_class_count == {0: 1, 3: 1, 4: 1, 5: 1}
    assert report.confusions == [(4, 0, 1), (5, 0, 1)]
    assert report.num_images == 4
    assert report.num_classes == 6


def test_report_counts_are_ints():
    report = classification_report(one_hot_logits([0, 0, 1], 3), targets_of([0, 0, 1]))

    assert report.per_class_count == {0: 2, 1: 1}
    assert all(type(label) is int for label in report.per_class_recall)
    assert all(type(label) is int for label in report.per_class_count)
