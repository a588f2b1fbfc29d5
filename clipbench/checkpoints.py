"""Reading local checkpoint files into a plain state dict.

Accepts ``.safetensors``, ``.pt``, ``.pth`` and ``.bin``. Torch files are read with
``weights_only=True``, so a checkpoint cannot run code on load. Training wrappers are
unwrapped: a ``state_dict`` (or ``model``) entry, and a ``module.`` prefix on any key, as
DataParallel and DDP write them.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import struct
from pathlib import Path

import torch

from clipbench.errors import ModelLoadError

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_sha256_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file, cached by path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _sha256_cache:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _sha256_cache[key] = digest.hexdigest()
    return _sha256_cache[key]


def check_checkpoint_path(path: str | Path) -> Path:
    """Return the path if it names a readable checkpoint file, else raise ModelLoadError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"checkpoint file not found: {path} (set model.checkpoint to an existing .pt/.pth/.bin/.safetensors file)")
    if path.is_dir():
        raise ModelLoadError(f"checkpoint path {path} is a folder: point model.checkpoint at the weights file inside it")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(f"checkpoint {path} has suffix {path.suffix!r}; supported: {', '.join(CHECKPOINT_SUFFIXES)}")
    return path


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """Return the string metadata stored in a safetensors header (empty for other formats)."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except SafetensorError as err:
        raise ModelLoadError(f"checkpoint {path} is not a valid safetensors file: {err}") from err


def _unwrap(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict):
        for wrapper_key in ("state_dict", "model", "module"):
            inner = checkpoint.get(wrapper_key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                log.info("Using the %r entry of checkpoint %s", wrapper_key, path.name)
                checkpoint = inner
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ModelLoadError(f"checkpoint {path} does not contain a state dict (found {type(checkpoint).__name__})")

    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"checkpoint {path} contains no tensors")
    return tensors


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` prefixes (one or more, as nested wrappers write them) from every key."""
    cleaned = {}
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module."):]
        cleaned[key] = value
    return cleaned


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise ModelLoadError(f"checkpoint {path} is not a valid safetensors file: {err}") from err


def _last_line(err: Exception) -> str:
    """Return the informative line of a torch.load error: the unpickler's reason when present."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if "WeightsUnpickler error" in line]
    if reasons:
        return reasons[0].rstrip(".")
    return lines[-1].rstrip(".") if lines else type(err).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file on the CPU and return its unwrapped state dict."""
    path = check_checkpoint_path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            checkpoint = _read_safetensors(path)
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            raise ModelLoadError(f"checkpoint {path} could not be read: it is corrupt or not a torch checkpoint "
                                 "(torch.load could not unpickle it)") from err
        raise ModelLoadError(
            f"checkpoint {path} contains objects other than tensors and plain containers, which are not loaded "
            f"for safety (torch.load weights_only=True): {_last_line(err)}. Save model.state_dict() instead."
        ) from err
    except (RuntimeError, OSError, ValueError, EOFError, struct.error, KeyError, IndexError) as err:
        # torch.load reports a damaged or foreign file through any of these.
        raise ModelLoadError(
            f"checkpoint {path} could not be read (corrupt or not a torch checkpoint): {type(err).__name__}: {err}"
        ) from err
    return strip_module_prefix(_unwrap(checkpoint, path))
