"""On-disk cache for computed features (zero-shot classifier weights, image features).

Entries are keyed by a SHA-256 over everything that determines the result: the model's
identity (architecture, tag, weights hash, QuickGELU), the inputs and the templates. A
changed model or prompt gives a new key, so stale entries are never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Return ``$CLIPBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/clipbench``, else ``~/.cache/clipbench``."""
    if os.environ.get("CLIPBENCH_CACHE_DIR"):
        return Path(os.environ["CLIPBENCH_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "clipbench"


def cache_key(parts: dict[str, Any]) -> str:
    """Hash a JSON-serialisable description of a computation into a file-name-safe key."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:32]


def cached_tensor(kind: str, parts: dict[str, Any], compute: Callable[[], torch.Tensor],
                  cache_dir: str | Path | None) -> tuple[torch.Tensor, bool]:
    """Return (tensor, was_cached): read the entry if present, else compute and store it.

    ``cache_dir=None`` disables the cache. A corrupt entry is recomputed and overwritten.
    """
    if cache_dir is None:
        return compute(), False

    path = Path(cache_dir) / kind / f"{cache_key(parts)}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True), True
        except (RuntimeError, OSError, EOFError) as err:
            log.warning("Ignoring unreadable cache entry %s (%s); recomputing", path, err)

    tensor = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(tensor.detach().cpu(), temporary)
    os.replace(temporary, path)
    return tensor, False
