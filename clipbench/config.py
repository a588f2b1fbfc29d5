"""Typed schema of the ``clipbench eval`` configuration.

Hydra composes the YAML files under ``conf/`` on top of these dataclasses. A misspelt key
or a value of the wrong type therefore fails with the key's full name before any model is
loaded.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clipbench.errors import ConfigError
from clipbench.offline_model import ASSETS_DIR

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class BadImagePolicy(str, Enum):
    skip = "skip"
    fail = "fail"


class ClassScope(str, Enum):
    all = "all"
    subset = "subset"


@dataclass
class ModelConfig:
    name: str = "clipbench-tiny"
    pretrained: Optional[str] = None
    checkpoint: Optional[str] = None
    quick_gelu: Optional[bool] = None
    cache_dir: Optional[str] = None


@dataclass
class DatasetConfig:
    name: str = "shapes"
    root: Optional[str] = None
    class_index: Optional[str] = None
    class_scope: ClassScope = ClassScope.all
    classnames_file: Optional[str] = None
    hf_path: Optional[str] = None
    split: str = "validation"
    revision: Optional[str] = None
    cache_dir: Optional[str] = None
    image_column: str = "image"
    label_column: str = "label"
    images_per_class: int = 10
    seed: int = 2
    limit_per_class: Optional[int] = None
    limit_total: Optional[int] = None


@dataclass
class PromptsConfig:
    name: str = "openai"
    templates: Optional[List[str]] = None
    file: Optional[str] = None


@dataclass
class RuntimeConfig:
    device: str = "auto"
    precision: Precision = Precision.fp32
    batch_size: int = 64
    num_workers: int = 2
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    max_image_pixels: Optional[int] = None
    warmup_batches: int = 1
    latency_requests: int = 20
    feature_cache: bool = True
    cache_dir: Optional[str] = None
    progress: bool = True
    num_confusions: int = 20


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None
    experiment: str = "clipbench-eval"
    run_name: Optional[str] = None


@dataclass
class SweepConfig:
    resume: bool = True
    force: bool = False


@dataclass
class EvalConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    verbose: bool = False


def _asset_path(name: str) -> str:
    return str(ASSETS_DIR / name)


def register_resolvers() -> None:
    """Register ``${clipbench_asset:FILE}`` and the ``eval_schema`` base config with Hydra.

    ``conf/config.yaml`` lists ``eval_schema`` first in its defaults, so every key of
    ``EvalConfig`` exists in the composed configuration and Hydra type-checks overrides.
    """
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("clipbench_asset"):
        OmegaConf.register_new_resolver("clipbench_asset", _asset_path)
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)


def validate_config(cfg: DictConfig | dict[str, Any]) -> EvalConfig:
    """Merge a composed configuration into the schema; raise ConfigError naming the bad key."""
    register_resolvers()
    raw = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)) if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    raw.pop("hydra", None)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(EvalConfig), raw)
        OmegaConf.resolve(merged)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from err
    _check_ranges(typed)
    return typed


def _one_line(err: OmegaConfBaseException) -> str:
    message = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"invalid configuration at {key}: {message}" if key else f"invalid configuration: {message}"


def _check_ranges(cfg: EvalConfig) -> None:
    checks = [
        ("runtime.batch_size", cfg.runtime.batch_size, 1),
        ("runtime.num_workers", cfg.runtime.num_workers, 0),
        ("runtime.warmup_batches", cfg.runtime.warmup_batches, 0),
        ("runtime.latency_requests", cfg.runtime.latency_requests, 0),
        ("dataset.images_per_class", cfg.dataset.images_per_class, 1),
    ]
    for key, value, minimum in checks:
        if value < minimum:
            raise ConfigError(f"invalid configuration at {key}: {value} is below the minimum {minimum}")
    for key in ("limit_per_class", "limit_total"):
        value = getattr(cfg.dataset, key)
        if value is not None and value < 1:
            raise ConfigError(f"invalid configuration at dataset.{key}: {value}; use a positive number or null")
    if cfg.runtime.max_image_pixels is not None and cfg.runtime.max_image_pixels < 1:
        raise ConfigError(f"invalid configuration at runtime.max_image_pixels: {cfg.runtime.max_image_pixels}")


def schema_keys() -> list[str]:
    """Return every dotted key of the configuration schema, such as ``runtime.precision``."""
    def walk(node: Any, prefix: str) -> list[str]:
        keys = []
        for key in node:
            child = node[key]
            dotted = f"{prefix}{key}"
            keys.extend(walk(child, f"{dotted}.") if isinstance(child, DictConfig) else [dotted])
        return keys

    return walk(OmegaConf.structured(EvalConfig), "")


def _unknown_key_message(key: str) -> str:
    keys = schema_keys()
    leaf = key.rsplit(".", 1)[-1]
    groups = sorted({k.split(".", 1)[0] for k in keys})
    close = (
        [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
        or ([f"{g}=..." for g in difflib.get_close_matches(key, groups, n=1, cutoff=0.7)] if "." not in key else [])
        or difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    )
    hint = f"; did you mean {' or '.join(close)}?" if close else "; run `clipbench eval --cfg job` to list the keys"
    return f"unknown configuration key {key!r}{hint}"


def composition_message(err: Exception) -> str:
    """Condense Hydra's multi-line composition error into one line that lists the valid options."""
    cause = str(err.__cause__ or "")
    unknown = re.search(r"Could not override '([^']+)'", str(err))
    if unknown and re.search(r"Key '[^']+' not in", cause):
        return _unknown_key_message(unknown.group(1))
    full_key = re.search(r"full_key: (\S+)", cause)
    if str(err).startswith("Error merging override") and full_key:
        return f"invalid configuration at {full_key.group(1)}: {cause.splitlines()[0]}"
    lines = str(err).splitlines()
    headline = next((line.strip() for line in lines if line.strip()), type(err).__name__)
    detail = next((line.strip() for line in lines if "Could not find" in line), headline)
    for i, line in enumerate(lines):
        if line.startswith("Available options in"):
            group = line.removeprefix("Available options in").strip().rstrip(":").strip("'")
            options = []
            for option in lines[i + 1:]:
                if not option.startswith(("\t", " ")) or not option.strip():
                    break
                options.append(option.strip())
            return f"{detail.split(': ', 1)[-1]}; available options for {group}: {', '.join(options)}"
    return headline


def compose_eval_config(overrides: Sequence[str] = ()) -> EvalConfig:
    """Compose ``conf/`` with Hydra's compose API and validate it, as ``clipbench eval`` does.

    Safe to call repeatedly in one process (notebook cells): Hydra's global state is
    cleared before and after. Raises ConfigError with a one-line message.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_resolvers()
    if not CONF_DIR.is_dir():
        raise ConfigError(f"configuration folder not found: {CONF_DIR} (install clipbench with pip install -e from a checkout)")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(composition_message(err)) from err
    return validate_config(cfg)
