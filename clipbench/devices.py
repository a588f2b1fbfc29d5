"""Device choice and mixed-precision contexts for inference."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from clipbench.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str = "auto") -> torch.device:
    """Pick cuda, then mps, then cpu for ``"auto"``; otherwise check the requested device exists."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ConfigError(f"invalid runtime.device {requested!r}: use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available here: use runtime.device=auto or runtime.device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {requested!r} does not exist: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {requested!r} requested but MPS is not available here: use runtime.device=auto or runtime.device=cpu")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"invalid precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision fp16 needs a GPU: on the CPU use runtime.precision=bf16 or runtime.precision=fp32")


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Return an autocast context for bf16/fp16, or a no-op for fp32. Weights stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """Return the dtype of the model's floating-point parameters (inputs are cast to it)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32
