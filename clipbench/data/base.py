"""Labelled image collections and the torch Dataset that decodes them safely.

A loader (ImageNet folder, Hugging Face, image folder, shapes) returns a ``LabeledImages``:
the classes, a list of samples (a reference and a label) and a function that reads one
reference as image bytes or a PIL image. Decoding always goes through
``clipbench.images.load_image``, so every data set rejects bad files the same way.
"""

from __future__ import annotations

import io
import logging
import numbers
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import torch
from PIL import Image

from clipbench.classes import ClassIndex
from clipbench.errors import ConfigError
from clipbench.images import ImageDecodeError, convert_to_rgb, load_image

log = logging.getLogger(__name__)


class Sample(NamedTuple):
    """One image: ``ref`` is what the reader takes (a path, a row number), ``sample_id`` is reported."""

    ref: Any
    label: int
    sample_id: str


@dataclass
class LabeledImages:
    """A classification data set: classes, samples, and how to read a sample's image."""

    name: str
    classes: ClassIndex
    samples: list[Sample]
    read: Callable[[Any], bytes | Image.Image]
    info: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def image_bytes(self, index: int) -> bytes:
        """Return sample ``index`` as encoded bytes (PNG when the source contains decoded images)."""
        raw = self.read(self.samples[index].ref)
        if isinstance(raw, bytes):
            return raw
        buffer = io.BytesIO()
        raw.save(buffer, format="PNG")
        return buffer.getvalue()


def apply_limits(samples: Sequence[Sample], limit_per_class: int | None, limit_total: int | None) -> list[Sample]:
    """Keep the first ``limit_per_class`` samples of each class, then the first ``limit_total``
    in round-robin class order, so a total limit stays balanced over classes."""
    for name, value in (("limit_per_class", limit_per_class), ("limit_total", limit_total)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"dataset.{name} must be a whole number or null, got {value!r}")
        if value < 1:
            raise ConfigError(f"dataset.{name} must be at least 1 or null, got {value}")

    counts: dict[int, int] = defaultdict(int)
    limited: list[Sample] = []
    for sample in samples:
        if limit_per_class is None or counts[sample.label] < limit_per_class:
            counts[sample.label] += 1
            limited.append(sample)
    if limit_total is None or len(limited) <= limit_total:
        return limited

    by_class: dict[int, list[Sample]] = defaultdict(list)
    for sample in limited:
        by_class[sample.label].append(sample)
    queues = [by_class[label] for label in sorted(by_class)]
    interleaved: list[Sample] = []
    for position in range(max(len(q) for q in queues)):
        for queue in queues:
            if position < len(queue) and len(interleaved) < limit_total:
                interleaved.append(queue[position])
    return interleaved


class DecodedItem(NamedTuple):
    pixels: torch.Tensor | None
    label: int
    sample_id: str
    error: str | None


class EvaluationDataset(torch.utils.data.Dataset):
    """Decode and preprocess samples; a rejected image becomes an item with ``error`` set."""

    def __init__(self, images: LabeledImages, preprocess: Callable, max_image_pixels: int | None = None):
        self.images = images
        self.preprocess = preprocess
        self.max_image_pixels = max_image_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> DecodedItem:
        sample = self.images.samples[index]
        try:
            raw = self.images.read(sample.ref)
            if isinstance(raw, Image.Image):
                image = convert_to_rgb(raw)
            else:
                image = load_image(raw, name=sample.sample_id, max_pixels=self.max_image_pixels)
        except ImageDecodeError as err:
            return DecodedItem(None, sample.label, sample.sample_id, str(err))
        except OSError as err:
            return DecodedItem(None, sample.label, sample.sample_id, f"Cannot read image '{sample.sample_id}': {err}")
        return DecodedItem(self.preprocess(image), sample.label, sample.sample_id, None)


class Batch(NamedTuple):
    pixels: torch.Tensor | None
    labels: torch.Tensor
    sample_ids: list[str]
    skipped: list[tuple[str, str]]


def collate_decoded(items: list[DecodedItem]) -> Batch:
    """Stack the decoded items and set the rejected ones aside as (sample_id, reason)."""
    good = [item for item in items if item.error is None]
    skipped = [(item.sample_id, item.error) for item in items if item.error is not None]
    pixels = torch.stack([item.pixels for item in good]) if good else None
    labels = torch.tensor([item.label for item in good], dtype=torch.long)
    return Batch(pixels, labels, [item.sample_id for item in good], skipped)
