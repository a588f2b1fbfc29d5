"""Build an OpenCLIP model from a specification and time each phase of loading.

Three sources of weights go through one function:
- an OpenCLIP architecture with a pretrained tag (weights from the hub or its local cache);
- an ``hf-hub:org/name`` model;
- a local checkpoint file (nothing is downloaded; the tag, when given, only selects the
  preprocessing and QuickGELU setting that the checkpoint was fine-tuned with).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2

from clipbench.checkpoints import check_checkpoint_path, file_sha256, read_state_dict, safetensors_metadata
from clipbench.devices import check_precision, resolve_device
from clipbench.errors import ModelLoadError
from clipbench.offline_model import register_offline_model_config
from clipbench.timing import timed

log = logging.getLogger(__name__)

HF_HUB_PREFIX = "hf-hub:"
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True)
class ModelSpec:
    """Model to load: architecture, weights, device and precision."""

    model_name: str
    pretrained: str | None = None
    checkpoint_path: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    quick_gelu: bool | None = None
    cache_dir: str | None = None


@dataclass
class LoadedModel:
    """A model in eval mode on its device, with its preprocessing, tokenizer and load facts."""

    spec: ModelSpec
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    device: torch.device
    weights_path: str | None
    weights_sha256: str | None
    load_phases_s: dict[str, float] = field(default_factory=dict)
    parameter_counts: dict[str, int] = field(default_factory=dict)

    @property
    def load_time_s(self) -> float:
        return sum(self.load_phases_s.values())


def check_architecture(model_name: str) -> None:
    """Raise ModelLoadError naming the closest OpenCLIP architectures when the name is unknown."""
    if model_name.startswith(HF_HUB_PREFIX):
        return
    known = open_clip.list_models()
    if model_name in known:
        return
    close = difflib.get_close_matches(model_name, known, n=5, cutoff=0.4)
    hint = f" Closest matches: {', '.join(close)}." if close else " See open_clip.list_models() for all names."
    raise ModelLoadError(f"unknown OpenCLIP architecture {model_name!r}.{hint}")


def tag_config(model_name: str, tag: str) -> dict[str, Any]:
    """Return OpenCLIP's pretrained config for a tag, or raise listing the valid tags."""
    config = open_clip.get_pretrained_cfg(model_name, tag)
    if config:
        return config
    valid = open_clip.list_pretrained_tags_by_model(model_name)
    listing = ", ".join(valid) if valid else "none (use a local checkpoint via model.checkpoint)"
    raise ModelLoadError(f"pretrained tag {tag!r} is not available for {model_name}. Valid tags: {listing}")


def _offline_hint(err: Exception, spec: ModelSpec) -> ModelLoadError:
    cache = spec.cache_dir or os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    state = "HF_HUB_OFFLINE is set" if offline else "the download failed"
    return ModelLoadError(
        f"weights for {spec.model_name} ({spec.pretrained or 'hub default'}) are not in the local cache ({cache}) "
        f"and {state}: {str(err).splitlines()[0].rstrip('.') if str(err) else type(err).__name__}. "
        "Connect to the internet once to download them, set model.cache_dir (or HF_HOME) to a folder that has them, "
        "or pass a local checkpoint with model.checkpoint=PATH."
    )


def _quick_gelu_setting(spec: ModelSpec, tag_cfg: dict[str, Any]) -> bool:
    """Use the tag's QuickGELU setting unless configured; warn when the two disagree."""
    tag_quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if spec.quick_gelu is None:
        return tag_quick_gelu
    if tag_cfg and spec.quick_gelu != tag_quick_gelu:
        message = (
            f"model.quick_gelu={spec.quick_gelu} but tag {spec.pretrained!r} of {spec.model_name} was trained with "
            f"quick_gelu={tag_quick_gelu}; accuracy will suffer unless the checkpoint really uses "
            f"{'QuickGELU' if spec.quick_gelu else 'GELU'}"
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        log.warning(message)
    return spec.quick_gelu


def _warn_on_checkpoint_tag_mismatch(spec: ModelSpec, checkpoint: Path) -> None:
    """Warn when a safetensors checkpoint records a base tag other than the configured one."""
    recorded = safetensors_metadata(checkpoint).get("pretrained_tag")
    if recorded and spec.pretrained and recorded != spec.pretrained:
        message = (
            f"checkpoint {checkpoint.name} records base tag {recorded!r} but model.pretrained is {spec.pretrained!r}: "
            f"the preprocessing of {spec.pretrained!r} is used"
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        log.warning(message)


def _load_local_weights(model: torch.nn.Module, checkpoint: Path, architecture: str) -> None:
    state_dict = read_state_dict(checkpoint)
    if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state_dict:
        raise ModelLoadError(f"checkpoint {checkpoint} has no logit_bias, which {type(model).__name__} with a bias needs")

    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # torch raises RuntimeError for tensors of the wrong shape
        mismatches = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        raise ModelLoadError(
            f"checkpoint {checkpoint} does not match the architecture {architecture}: "
            f"{len(mismatches)} tensors have other shapes (e.g. {mismatches[0] if mismatches else err}). "
            "Check model.name against the architecture the checkpoint was trained with."
        ) from err
    if missing or unexpected:
        raise ModelLoadError(
            f"checkpoint {checkpoint} does not match the architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}) and {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). "
            "Check model.name against the architecture the checkpoint was trained with."
        )


def _resolve_hub_weights(spec: ModelSpec, tag_cfg: dict[str, Any]) -> str:
    try:
        path = open_clip.download_pretrained(tag_cfg, cache_dir=spec.cache_dir)
    except Exception as err:  # huggingface_hub and urllib raise many types for a missing cache or network
        raise _offline_hint(err, spec) from err
    if not path:
        raise ModelLoadError(f"no download source is known for {spec.model_name} {spec.pretrained!r}")
    return path


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Count parameters of the image tower, the rest (text tower and projections) and the total."""
    total = sum(p.numel() for p in model.parameters())
    visual = getattr(model, "visual", None)
    image = sum(p.numel() for p in visual.parameters()) if visual is not None else 0
    return {"image": image, "text": total - image, "total": total}


def _build_from_hf_hub(spec: ModelSpec, phases: dict[str, float]) -> tuple[torch.nn.Module, str | None]:
    model_id = spec.model_name[len(HF_HUB_PREFIX):]
    with timed(phases, "resolve_weights_s"):
        try:
            weights_path = open_clip.pretrained.download_pretrained_from_hf(model_id, cache_dir=spec.cache_dir)
        except Exception as err:  # see _resolve_hub_weights
            raise _offline_hint(err, spec) from err
    with timed(phases, "build_s"):
        try:
            model = open_clip.create_model(spec.model_name, cache_dir=spec.cache_dir, require_pretrained=True)
        except Exception as err:
            raise ModelLoadError(f"could not build {spec.model_name}: {err}") from err
    return model, weights_path


class _RandomInitFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """Hide OpenCLIP's "initialized randomly" warning: the weights are loaded right after the build."""
    root = logging.getLogger()
    quiet = _RandomInitFilter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _build_from_tag_or_checkpoint(spec: ModelSpec, phases: dict[str, float]) -> tuple[torch.nn.Module, str]:
    tag_cfg = tag_config(spec.model_name, spec.pretrained) if spec.pretrained else {}
    checkpoint = check_checkpoint_path(spec.checkpoint_path) if spec.checkpoint_path else None
    if checkpoint is None and not tag_cfg:
        valid = ", ".join(open_clip.list_pretrained_tags_by_model(spec.model_name)) or "none"
        raise ModelLoadError(
            f"no weights given for {spec.model_name}: set model.pretrained to a tag ({valid}) "
            "or model.checkpoint to a local file"
        )

    quick_gelu = _quick_gelu_setting(spec, tag_cfg)
    preprocess_cfg = {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg}
    if checkpoint is not None:
        _warn_on_checkpoint_tag_mismatch(spec, checkpoint)
        weights_path = str(checkpoint)
    else:
        with timed(phases, "resolve_weights_s"):
            weights_path = _resolve_hub_weights(spec, tag_cfg)

    with timed(phases, "build_s"), _quiet_random_init_warning():
        model = open_clip.create_model(
            spec.model_name, pretrained=None, force_quick_gelu=quick_gelu,
            force_preprocess_cfg=preprocess_cfg, pretrained_text=False, pretrained_image=False,
        )
    with timed(phases, "load_weights_s"):
        if checkpoint is not None:
            _load_local_weights(model, checkpoint, spec.model_name)
        else:
            open_clip.load_checkpoint(model, weights_path)
    return model, weights_path


def _load_tokenizer(spec: ModelSpec) -> Callable:
    """Build the architecture's tokenizer; some (SigLIP, for one) come from the hub as files."""
    try:
        return open_clip.get_tokenizer(spec.model_name, cache_dir=spec.cache_dir)
    except ImportError as err:
        raise ModelLoadError(f"the tokenizer of {spec.model_name} needs the package {err.name!r}: pip install {err.name}") from err
    except (OSError, ValueError) as err:  # huggingface_hub raises OSError subclasses for cache misses offline
        raise _offline_hint(err, spec) from err


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build the model, load its weights, move it to its device in eval mode, and time each phase.

    Phases (seconds): ``resolve_weights_s`` (find or download the weights file), ``build_s``
    (instantiate the architecture), ``load_weights_s`` and ``to_device_s``.
    """
    register_offline_model_config()
    check_architecture(spec.model_name)
    device = resolve_device(spec.device)
    check_precision(spec.precision, device)

    phases: dict[str, float] = {"resolve_weights_s": 0.0}
    if spec.model_name.startswith(HF_HUB_PREFIX):
        model, weights_path = _build_from_hf_hub(spec, phases)
    else:
        model, weights_path = _build_from_tag_or_checkpoint(spec, phases)

    with timed(phases, "to_device_s", device):
        model = model.to(device).eval()

    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    tokenizer = _load_tokenizer(spec)
    sha256 = file_sha256(weights_path) if weights_path and Path(weights_path).is_file() else None
    loaded = LoadedModel(spec, model, preprocess, tokenizer, device, weights_path, sha256, phases, count_parameters(model))
    log.info(
        "Loaded %s (%s) on %s in %.2f s: %s", spec.model_name, spec.pretrained or spec.checkpoint_path,
        device, loaded.load_time_s, ", ".join(f"{k}={v:.2f}" for k, v in phases.items()),
    )
    return loaded
