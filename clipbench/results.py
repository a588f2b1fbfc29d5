"""Write an evaluation's results to its run directory as plain files (JSON, CSV, YAML).

These files are the record of a run; the MLflow run receives copies of them as artifacts.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from clipbench.classes import ClassIndex
from clipbench.metrics import ClassificationReport

log = logging.getLogger(__name__)

PREDICTION_TOP_K = 5


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps({k: _json_safe(v) for k, v in payload.items()}, indent=2, sort_keys=True, default=str))
    return path


def write_per_class(path: Path, report: ClassificationReport, classes: ClassIndex) -> Path:
    """Write one CSV row per class that has images: id, name, image count and recall (per-class accuracy)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_index", "wnid", "classname", "num_images", "accuracy"])
        for label in sorted(report.per_class_recall):
            writer.writerow([label, classes.wnids[label], classes.classnames[label],
                             report.per_class_count[label], f"{report.per_class_recall[label]:.6f}"])
    return path


def write_confusions(path: Path, report: ClassificationReport, classes: ClassIndex) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["target", "target_name", "predicted", "predicted_name", "count"])
        for target, predicted, count in report.confusions:
            writer.writerow([target, classes.classnames[target], predicted, classes.classnames[predicted], count])
    return path


def write_predictions(path: Path, sample_ids: Sequence[str], logits: torch.Tensor, targets: torch.Tensor) -> Path:
    """Per image: id, target, and the top-5 class indices with softmax probabilities."""
    k = min(PREDICTION_TOP_K, logits.shape[1])
    scores, indices = logits.softmax(dim=1).topk(k, dim=1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "target", "correct"]
                        + [f"top{i + 1}_index" for i in range(k)] + [f"top{i + 1}_score" for i in range(k)])
        for row, sample_id in enumerate(sample_ids):
            top = indices[row].tolist()
            writer.writerow([sample_id, int(targets[row]), int(top[0] == int(targets[row]))]
                            + top + [f"{s:.6f}" for s in scores[row].tolist()])
    return path


def write_skipped(path: Path, skipped: Sequence[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "reason"])
        writer.writerows(skipped)
    return path
