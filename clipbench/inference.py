"""Batched zero-shot inference over a data set: logits, timings and skipped images."""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from clipbench.data.base import Batch, EvaluationDataset, LabeledImages, collate_decoded
from clipbench.devices import autocast, model_dtype
from clipbench.errors import DatasetError
from clipbench.loading import LoadedModel
from clipbench.timing import synchronize

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("skip", "fail")


@dataclass
class InferenceOutput:
    """Logits for every decoded image, in data set order, plus timings and rejected images."""

    logits: torch.Tensor
    targets: torch.Tensor
    sample_ids: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    batch_latencies_ms: list[float] = field(default_factory=list)
    timed_images: int = 0
    timed_seconds: float = 0.0
    all_images: int = 0
    all_seconds: float = 0.0

    @property
    def throughput_images_per_s(self) -> float | None:
        """Images per second after warm-up, or over all batches when warm-up took every batch."""
        if self.timed_seconds > 0:
            return self.timed_images / self.timed_seconds
        return self.all_images / self.all_seconds if self.all_seconds > 0 else None


def make_loader(images: LabeledImages, loaded: LoadedModel, batch_size: int, num_workers: int,
                max_image_pixels: int | None = None) -> torch.utils.data.DataLoader:
    """DataLoader that decodes in workers and keeps data set order (predictions stay comparable)."""
    dataset = EvaluationDataset(images, loaded.preprocess, max_image_pixels)
    # The platform's default start method, named explicitly: inside a joblib (loky) worker the
    # process-wide default context is loky's, which cannot start DataLoader workers.
    context = multiprocessing.get_context(multiprocessing.get_all_start_methods()[0]) if num_workers > 0 else None
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate_decoded, pin_memory=loaded.device.type == "cuda",
        persistent_workers=False, multiprocessing_context=context,
    )


def _encode_batch(loaded: LoadedModel, batch: Batch, classifier: torch.Tensor, precision: str) -> torch.Tensor:
    pixels = batch.pixels.to(loaded.device, dtype=model_dtype(loaded.model), non_blocking=True)
    with torch.inference_mode():
        with autocast(loaded.device, precision):
            image_features = loaded.model.encode_image(pixels, normalize=True)
        logit_scale = loaded.model.logit_scale.exp().float()
        return (logit_scale * image_features.float() @ classifier).cpu()


def run_inference(
    loaded: LoadedModel,
    images: LabeledImages,
    classifier: torch.Tensor,
    batch_size: int = 64,
    num_workers: int = 2,
    on_bad_image: str = "skip",
    warmup_batches: int = 1,
    max_image_pixels: int | None = None,
    show_progress: bool = True,
) -> InferenceOutput:
    """Score every image against the classifier.

    Rejected images are skipped and listed (``on_bad_image="skip"``) or stop the run with a
    DatasetError naming the first one (``"fail"``). Throughput counts only the encoded batches
    after the first ``warmup_batches`` of them, so a batch whose images were all rejected is
    not a warm-up batch. Each batch's latency covers transfer, encoding and scoring.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise DatasetError(f"invalid runtime.on_bad_image {on_bad_image!r}: use one of {', '.join(BAD_IMAGE_POLICIES)}")
    if batch_size < 1:
        raise DatasetError(f"runtime.batch_size must be at least 1, got {batch_size}")

    loader = make_loader(images, loaded, batch_size, num_workers, max_image_pixels)
    output = InferenceOutput(torch.empty(0), torch.empty(0, dtype=torch.long), [])
    logits, targets = [], []
    progress = tqdm(total=len(images), desc=f"Evaluating {images.name}", unit="img", disable=not show_progress)
    encoded_batches = 0
    for batch in loader:
        if batch.skipped:
            if on_bad_image == "fail":
                progress.close()
                sample_id, reason = batch.skipped[0]
                raise DatasetError(f"{reason} (runtime.on_bad_image=fail stops at the first bad image; use skip to continue)")
            for sample_id, reason in batch.skipped:
                log.warning("Skipped %s: %s", sample_id, reason)
            output.skipped.extend(batch.skipped)
        if batch.pixels is None:
            progress.update(len(batch.skipped))
            continue

        synchronize(loaded.device)
        started = time.perf_counter()
        batch_logits = _encode_batch(loaded, batch, classifier, loaded.spec.precision)
        synchronize(loaded.device)
        elapsed_s = time.perf_counter() - started

        output.all_images += len(batch.labels)
        output.all_seconds += elapsed_s
        if encoded_batches >= warmup_batches:
            output.batch_latencies_ms.append(elapsed_s * 1000)
            output.timed_images += len(batch.labels)
            output.timed_seconds += elapsed_s
        encoded_batches += 1
        logits.append(batch_logits)
        targets.append(batch.labels)
        output.sample_ids.extend(batch.sample_ids)
        progress.update(len(batch.labels) + len(batch.skipped))
    progress.close()

    if not logits:
        raise DatasetError(f"none of the {len(images)} images of {images.name} could be decoded; first reason: "
                           f"{output.skipped[0][1] if output.skipped else 'no images'}")
    output.logits = torch.cat(logits)
    output.targets = torch.cat(targets)
    return output
