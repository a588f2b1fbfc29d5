"""Classification metrics as CLIP_benchmark reports them: top-1, top-5, mean per-class recall.

All functions take logits ``(num_images, num_classes)`` and integer targets ``(num_images,)``.
Tied logits rank the lower class index first, as ``argmax`` does, so top-1 accuracy and the
per-class recalls always score the same prediction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Fraction of images whose target is among the ``k`` highest logits (ties: lower index first)."""
    if logits.shape[0] == 0:
        raise ValueError("no predictions to score")
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"targets must have shape ({logits.shape[0]},) to match the logits, got {tuple(targets.shape)}")
    if k < 1:
        raise ValueError(f"top-k accuracy needs k of at least 1, got {k}")
    if k > logits.shape[1]:
        raise ValueError(f"top-{k} accuracy needs at least {k} classes, got {logits.shape[1]}")
    if logits.isnan().any():
        raise ValueError("logits contain NaN, so the classes cannot be ranked. Check the model and runtime.precision.")

    # Rank the target by counting the classes placed before it. torch.topk orders tied values
    # arbitrarily, so it could disagree with argmax on which tied class is the prediction.
    target_logits = logits.gather(1, targets[:, None])
    class_indices = torch.arange(logits.shape[1], device=logits.device)
    tied_before = (logits == target_logits) & (class_indices[None, :] < targets[:, None])
    rank = (logits > target_logits).sum(dim=1) + tied_before.sum(dim=1)
    return int((rank < k).sum()) / logits.shape[0]


def per_class_recall(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[int, float]:
    """Recall of each class that has at least one image (classes without images are absent)."""
    recall = {}
    for label in targets.unique().tolist():
        mask = targets == label
        recall[int(label)] = int((predictions[mask] == label).sum()) / int(mask.sum())
    return recall


def mean_per_class_recall(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """Mean of the per-class recalls over classes present in ``targets`` (balanced accuracy)."""
    recalls = per_class_recall(predictions, targets, num_classes)
    if not recalls:
        raise ValueError("no predictions to score")
    return sum(recalls.values()) / len(recalls)


def top_confusions(predictions: torch.Tensor, targets: torch.Tensor, n: int) -> list[tuple[int, int, int]]:
    """Return the ``n`` most frequent (target, predicted, count) mistakes, most frequent first."""
    wrong = predictions != targets
    pairs = Counter(zip(targets[wrong].tolist(), predictions[wrong].tolist()))
    return [(t, p, c) for (t, p), c in sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:n]]


@dataclass
class ClassificationReport:
    """Metrics of one evaluation; ``top5`` is None when there are fewer than 5 classes."""

    top1: float
    top5: float | None
    mean_per_class_recall: float
    per_class_recall: dict[int, float]
    per_class_count: dict[int, int]
    confusions: list[tuple[int, int, int]]
    num_images: int
    num_classes: int


def classification_report(logits: torch.Tensor, targets: torch.Tensor, num_confusions: int = 20) -> ClassificationReport:
    """Compute every metric of one evaluation from its logits and targets."""
    num_classes = logits.shape[1]
    predictions = logits.argmax(dim=1)
    counts = Counter(targets.tolist())
    return ClassificationReport(
        top1=topk_accuracy(logits, targets, 1),
        top5=topk_accuracy(logits, targets, 5) if num_classes >= 5 else None,
        mean_per_class_recall=mean_per_class_recall(predictions, targets, num_classes),
        per_class_recall=per_class_recall(predictions, targets, num_classes),
        per_class_count={int(k): v for k, v in counts.items()},
        confusions=top_confusions(predictions, targets, num_confusions),
        num_images=int(logits.shape[0]),
        num_classes=num_classes,
    )

