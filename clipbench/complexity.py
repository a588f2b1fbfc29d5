"""Model size and compute: parameter counts and forward-pass FLOPs of each tower.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts one
multiply-add as 2 FLOPs. It counts matrix products, convolutions and attention, but not
normalisation, activations, softmax or additions. Causal attention in the text tower is
counted as full attention, as torch counts it. With torch 2.14 and open_clip 3.3 on CPU,
ViT-B-32 measures 8.82 GFLOPs per image and 5.96 per text, the figures in OpenCLIP's
``docs/model_profile.csv``.

FLOPs depend on the architecture and the input size, not on the weights, so results are
cached per architecture under ``<cache_dir>/complexity/<key>.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from clipbench.feature_cache import cache_key
from clipbench.loading import count_parameters

if TYPE_CHECKING:
    from clipbench.loading import LoadedModel

log = logging.getLogger(__name__)

SAMPLE_TEXT = "a photo of a cat."
CACHE_KIND = "complexity"
# Bump when the counting method changes, so that entries measured the old way are not read.
CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelComplexity:
    """Parameter counts (millions) and FLOPs of one forward pass per input (GFLOPs, 1 GFLOP = 1e9 FLOPs)."""

    params_image_millions: float
    params_text_millions: float
    params_total_millions: float
    gflops_per_image: float
    gflops_per_text: float

    def as_metrics(self) -> dict[str, float]:
        """Return the fields as a flat dict of metric name to value, ready for a tracker."""
        return {name: float(value) for name, value in asdict(self).items()}


def _cpu_sdpa_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size,
                    *args: Any, out_shape: torch.Size | None = None, **kwargs: Any) -> int:
    """Count the two attention matrix products, as torch does for its CUDA attention kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """Return formulas for attention kernels that FlopCounterMode does not count by itself.

    torch 2.14 has formulas for the CUDA flash, memory-efficient and cuDNN attention kernels
    but not for the CPU flash kernel, which ``scaled_dot_product_attention`` runs on CPU.
    """
    # NOTE: attention kernels of other backends, when torch has no formula for them, count as 0 FLOPs.
    cpu_kernel = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {cpu_kernel: _cpu_sdpa_flops} if cpu_kernel is not None else {}


@contextlib.contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    """Turn off the fused ``nn.MultiheadAttention`` inference kernel while counting.

    Without grad, ``nn.MultiheadAttention`` runs ``aten._native_multi_head_attention``, which
    FlopCounterMode does not count, so the input and output projections would be missed.
    The setting is process-wide and restored on exit.
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def count_forward_flops(forward: Callable[[], Any]) -> int:
    """Run ``forward`` once without grad and return its FLOPs (a multiply-add counts as 2)."""
    counter = FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())

    with _mha_fastpath_disabled(), torch.inference_mode(), counter:
        forward()

    return counter.get_total_flops()


def image_size_of(model: torch.nn.Module) -> tuple[int, int]:
    """Return the image tower's input size as (height, width) in pixels."""
    size = model.visual.image_size
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def context_length_of(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """Return the text tower's context length in tokens, or None when neither model nor tokenizer states it."""
    length = getattr(model, "context_length", None)
    if length is None:
        length = getattr(tokenizer, "context_length", None)
    return int(length) if length is not None else None


def measure_complexity(model: torch.nn.Module, tokenizer: Callable) -> ModelComplexity:
    """Count the parameters and the FLOPs of ``encode_image`` and ``encode_text`` for one input each.

    The image is zeros of shape (1, 3, H, W) at the model's input size and the text is
    ``SAMPLE_TEXT`` tokenized to the model's context length. Both run on the model's device
    and dtype, and the model is not moved. FlopCounterMode counts a multiply-add as 2 FLOPs.
    The parameter split follows ``clipbench.loading.count_parameters``: the image tower is
    ``model.visual`` and the text side is everything else.
    """
    reference = next(model.visual.parameters())
    height, width = image_size_of(model)
    images = torch.zeros((1, 3, height, width), device=reference.device, dtype=reference.dtype)
    tokens = tokenizer([SAMPLE_TEXT]).to(reference.device)

    image_flops = count_forward_flops(lambda: model.encode_image(images))
    text_flops = count_forward_flops(lambda: model.encode_text(tokens))

    counts = count_parameters(model)
    return ModelComplexity(
        params_image_millions=counts["image"] / 1e6,
        params_text_millions=counts["text"] / 1e6,
        params_total_millions=counts["total"] / 1e6,
        gflops_per_image=image_flops / 1e9,
        gflops_per_text=text_flops / 1e9,
    )


def complexity_cache_parts(loaded: LoadedModel) -> dict[str, Any]:
    """Describe what the complexity depends on: the architecture and input sizes, not the weights."""
    return {
        "model_name": loaded.spec.model_name,
        "image_size": list(image_size_of(loaded.model)),
        "context_length": context_length_of(loaded.model, loaded.tokenizer),
        "open_clip_version": open_clip.__version__,
        "format_version": CACHE_FORMAT_VERSION,
    }


def _read_cache_entry(path: Path) -> ModelComplexity | None:
    """Return the stored complexity, or None when the file is unreadable or incomplete."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        values = {field.name: float(stored["complexity"][field.name]) for field in fields(ModelComplexity)}
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("Ignoring invalid complexity cache entry %s (%s: %s). Measuring again.", path, type(err).__name__, err)
        return None
    return ModelComplexity(**values)


def _write_cache_entry(path: Path, parts: dict[str, Any], complexity: ModelComplexity) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    payload = {"key": parts, "complexity": complexity.as_metrics()}
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def model_complexity(loaded: LoadedModel, cache_dir: str | Path | None) -> ModelComplexity:
    """Return the complexity of a loaded model, measured once per architecture and cached as JSON.

    ``cache_dir=None`` disables the cache. A corrupt or incomplete entry is measured again and
    overwritten.
    """
    if cache_dir is None:
        return measure_complexity(loaded.model, loaded.tokenizer)

    parts = complexity_cache_parts(loaded)
    path = Path(cache_dir) / CACHE_KIND / f"{cache_key(parts)}.json"
    if path.is_file():
        cached = _read_cache_entry(path)
        if cached is not None:
            return cached

    complexity = measure_complexity(loaded.model, loaded.tokenizer)
    _write_cache_entry(path, parts, complexity)
    log.info(
        "Measured %s: %.2f M parameters, %.3f GFLOPs per image, %.3f GFLOPs per text",
        loaded.spec.model_name, complexity.params_total_millions,
        complexity.gflops_per_image, complexity.gflops_per_text,
    )
    return complexity
