"""Turn params, metrics, tags and nested configs into entries that MLflow accepts.

Keys are sanitized, metric values become floats, and a param or tag value over MLflow's
length limit is replaced by a placeholder and returned separately, so that the caller
can store it in an artifact file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
)

logger = logging.getLogger(__name__)

LONG_PARAMS_ARTIFACT = "long_params.json"
LONG_TAGS_ARTIFACT = "long_tags.json"

# MLflow 3.17 (mlflow.utils.validation.validate_param_and_metric_name) accepts word
# characters, periods, dashes, spaces and slashes in keys, and colons everywhere except
# on Windows. Colons are replaced here too, so that the same keys work on every platform.
INVALID_KEY_CHARACTERS = re.compile(r"[^\w./\- ]")
HASH_SUFFIX_LENGTH = 8

_Value = TypeVar("_Value")


def sanitize_key(key: str) -> str:
    """Return ``key`` rewritten into a valid MLflow param, metric or tag key.

    Invalid characters become ``_``. Empty path segments ("a//b", a leading or
    trailing "/") are removed, and "." or ".." segments and a leading ".." become
    underscores, because MLflow rejects keys that change under path normalisation.
    A valid key is returned unchanged. A key over MLflow's length limit is cut
    and ends in a hash of the full key, so distinct long keys stay distinct.
    """
    cleaned = INVALID_KEY_CHARACTERS.sub("_", str(key))

    segments = [_sanitize_segment(segment) for segment in cleaned.split("/") if segment]
    cleaned = "/".join(segments)

    if cleaned.startswith(".."):
        leading_periods = len(cleaned) - len(cleaned.lstrip("."))
        cleaned = "_" * leading_periods + cleaned[leading_periods:]

    if not cleaned:
        cleaned = "_"

    if len(cleaned) > MAX_ENTITY_KEY_LENGTH:
        cleaned = _shorten_key(cleaned, str(key))

    return cleaned


def _sanitize_segment(segment: str) -> str:
    if segment in {".", ".."}:
        return "_" * len(segment)
    return segment


def _shorten_key(cleaned: str, original: str) -> str:
    digest = hashlib.sha1(original.encode("utf-8")).hexdigest()[:HASH_SUFFIX_LENGTH]
    head = cleaned[: MAX_ENTITY_KEY_LENGTH - HASH_SUFFIX_LENGTH - 1].rstrip("/")
    return f"{head}_{digest}"


def _sanitize_keys(values: Mapping[str, _Value], kind: str) -> dict[str, _Value]:
    """Sanitize every key and log each rename. A key that collides after renaming gets a number."""
    sanitized: dict[str, _Value] = {}

    for key, value in values.items():
        new_key = sanitize_key(key)
        new_key = _unique_key(new_key, sanitized)

        if new_key != key:
            logger.warning("MLflow %s key %r is invalid and is logged as %r", kind, key, new_key)

        sanitized[new_key] = value

    return sanitized


def _unique_key(key: str, used_keys: Mapping[str, object]) -> str:
    if key not in used_keys:
        return key

    number = 2
    while sanitize_key(f"{key}_{number}") in used_keys:
        number += 1
    return sanitize_key(f"{key}_{number}")


def _value_to_text(value: object) -> str:
    """Render a param or tag value: strings as they are, containers as JSON."""
    if isinstance(value, str):
        return value

    if isinstance(value, Mapping) or _is_list_like(value):
        return json.dumps(_to_plain(value), default=str)

    return str(value)


def _split_long_values(
    values: Mapping[str, str], limit: int, artifact_file: str, kind: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Replace values longer than ``limit`` by a placeholder and return them separately."""
    loggable: dict[str, str] = {}
    too_long: dict[str, str] = {}
    placeholder = f"<see artifact {artifact_file}>"

    for key, value in values.items():
        if len(value) <= limit:
            loggable[key] = value
            continue

        logger.warning(
            "MLflow %s %r has %d characters (limit %d) and is stored in artifact %s",
            kind,
            key,
            len(value),
            limit,
            artifact_file,
        )
        loggable[key] = placeholder
        too_long[key] = value

    return loggable, too_long


def split_params(params: Mapping[str, object]) -> tuple[dict[str, str], dict[str, str]]:
    """Return (params to log, over-long params for ``long_params.json``), with sanitized keys.

    Values become strings. A value over MLflow's param length limit is logged as the
    placeholder ``<see artifact long_params.json>`` and returned in the second dict.
    """
    sanitized = _sanitize_keys(params, "param")
    as_text = {key: _value_to_text(value) for key, value in sanitized.items()}
    return _split_long_values(as_text, MAX_PARAM_VAL_LENGTH, LONG_PARAMS_ARTIFACT, "param")


def _prepare_metrics(metrics: Mapping[str, float | int | None]) -> dict[str, float]:
    """Convert metric values to float and drop None values. NaN and infinities are kept.

    Raises ValueError for a value that is not a number.
    """
    numeric: dict[str, float] = {}

    for key, value in metrics.items():
        if value is None:
            logger.debug("Metric %r is None and is not logged", key)
            continue

        numeric[key] = _metric_value(key, value)

    return _sanitize_keys(numeric, "metric")


def _metric_value(key: str, value: object) -> float:
    if isinstance(value, (str, bytes)):
        raise ValueError(f"Invalid value for metric {key!r}: expected a number, got the string {value!r}")

    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Invalid value for metric {key!r}: expected a number, got {type(value).__name__}: {error}"
        ) from error


def _prepare_tags(tags: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    sanitized = _sanitize_keys(tags, "tag")
    as_text = {key: _value_to_text(value) for key, value in sanitized.items()}
    return _split_long_values(as_text, MAX_TAG_VAL_LENGTH, LONG_TAGS_ARTIFACT, "tag")


def flatten_config(cfg: Mapping, prefix: str = "") -> dict[str, object]:
    """Flatten nested mappings into dotted keys ("a.b.c") and turn lists into JSON strings.

    An empty nested mapping is kept as the JSON string "{}" so that its key is not lost.
    Works on plain dicts and on OmegaConf ``DictConfig`` objects.
    """
    flat: dict[str, object] = {}

    for key, value in cfg.items():
        name = f"{prefix}.{key}" if prefix else str(key)

        if isinstance(value, Mapping) and len(value) > 0:
            flat.update(flatten_config(value, name))
        elif isinstance(value, Mapping):
            flat[name] = "{}"
        elif _is_list_like(value):
            flat[name] = json.dumps(_to_plain(value), default=str)
        else:
            flat[name] = value

    return flat


def _is_list_like(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def _to_plain(value: object) -> object:
    """Convert nested mappings and sequences (including OmegaConf containers) to dicts and lists."""
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in value.items()}

    if _is_list_like(value):
        return [_to_plain(item) for item in value]  # type: ignore[union-attr]

    return value
