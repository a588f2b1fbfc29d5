"""Zero-shot classifier weights: per class, encode every prompt, L2-normalise, average, re-normalise.

The encoding itself is OpenCLIP's ``build_zero_shot_classifier``; this module adds the
device/precision context and the on-disk cache.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import open_clip
import torch

from clipbench.devices import autocast
from clipbench.feature_cache import cached_tensor
from clipbench.loading import LoadedModel
from clipbench.prompts import PromptSet

log = logging.getLogger(__name__)


def model_fingerprint(loaded: LoadedModel) -> dict[str, object]:
    """Describe the model's identity for cache keys and run parameters."""
    return {
        "model_name": loaded.spec.model_name,
        "pretrained": loaded.spec.pretrained,
        "weights_sha256": loaded.weights_sha256,
        "quick_gelu": loaded.spec.quick_gelu,
        "precision": loaded.spec.precision,
    }


def build_classifier(
    loaded: LoadedModel,
    classnames: Sequence[str],
    prompts: PromptSet,
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
    classes_per_batch: int = 10,
) -> torch.Tensor:
    """Return classifier weights of shape ``(embed_dim, num_classes)`` in fp32 on the model's device."""
    def compute() -> torch.Tensor:
        with torch.inference_mode(), autocast(loaded.device, loaded.spec.precision):
            weights = open_clip.build_zero_shot_classifier(
                loaded.model, loaded.tokenizer, list(classnames), list(prompts.templates),
                num_classes_per_batch=classes_per_batch, device=loaded.device, use_tqdm=show_progress,
            )
        return weights.float()

    key_parts = {"model": model_fingerprint(loaded), "classnames": list(classnames), "templates": list(prompts.templates)}
    weights, was_cached = cached_tensor("text_features", key_parts, compute, cache_dir)
    if was_cached:
        log.info("Read zero-shot classifier for %d classes from the cache", len(classnames))
    return weights.to(loaded.device).float()
