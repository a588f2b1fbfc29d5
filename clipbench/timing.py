"""Wall-clock timing that is correct on GPUs: queued kernels finish before a clock is read."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` so that a clock read afterwards includes it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextmanager
def timed(timings_s: dict[str, float], key: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Add the seconds spent in the block to ``timings_s[key]``, synchronising the device at both ends."""
    synchronize(device)
    started = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        timings_s[key] = timings_s.get(key, 0.0) + time.perf_counter() - started


def percentile_ms(samples_ms: Sequence[float], percent: float) -> float | None:
    """Return the ``percent`` percentile of millisecond samples, or None without samples."""
    if len(samples_ms) == 0:
        return None
    return float(np.percentile(np.asarray(samples_ms, dtype=float), percent))
