"""The offline default model: a small CLIP trained by this project on the `shapes` data set.

Its architecture is an ordinary OpenCLIP model config (``clipbench-tiny``) that this module
registers with OpenCLIP; its weights are a local safetensors checkpoint loaded through the
same path as any user checkpoint.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
OFFLINE_MODEL_NAME = "clipbench-tiny"
OFFLINE_MODEL_CONFIG = ASSETS_DIR / f"{OFFLINE_MODEL_NAME}.json"
OFFLINE_CHECKPOINT = ASSETS_DIR / "clipbench-tiny-shapes.safetensors"


def register_offline_model_config() -> None:
    """Add the ``clipbench-tiny`` architecture to OpenCLIP's model registry (idempotent)."""
    import open_clip

    if OFFLINE_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(OFFLINE_MODEL_CONFIG)
