"""Log one finished evaluation to MLflow as a single run.

Callers write their results to a run directory first and call ``log_evaluation_run``
afterwards, so a tracking failure (``TrackingError``) loses nothing on disk.

The default store is the SQLite database ``<repository root>/mlruns/mlflow.db`` with
artifacts in ``<repository root>/mlruns/artifacts``. Both paths are absolute because
Hydra changes the working directory of every job. MLflow 3.17 rejects a plain
``./mlruns`` file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set, so this module never
creates one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import filelock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from clipbench.errors import ClipbenchError, ConfigError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STORE_DIR_NAME = "mlruns"
DATABASE_FILE_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "artifacts"
LONG_PARAMS_ARTIFACT = "long_params.json"
LONG_TAGS_ARTIFACT = "long_tags.json"

# MLflow 3.17 (mlflow.utils.validation.validate_param_and_metric_name) accepts word
# characters, periods, dashes, spaces and slashes in keys, and colons everywhere except
# on Windows. Colons are replaced here too, so that the same keys work on every platform.
INVALID_KEY_CHARACTERS = re.compile(r"[^\w./\- ]")
HASH_SUFFIX_LENGTH = 8

EXPERIMENT_LOCK_TIMEOUT_S = 120.0
EXPERIMENT_ATTEMPTS = 5
EXPERIMENT_RETRY_DELAY_S = 0.2
GIT_TIMEOUT_S = 10.0

_Value = TypeVar("_Value")


class TrackingError(ClipbenchError, RuntimeError):
    """Failure of an MLflow store to accept or complete a logging request."""


@dataclass
class TrackingResult:
    """Identifiers of a logged run. ``run_url`` is the UI link on http(s) stores, else None."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    run_url: str | None


def repository_root() -> Path:
    """Return the checkout that contains this package, or the current directory outside one.

    A checkout is the folder above ``clipbench/`` whose ``pyproject.toml`` names the
    project ``clipbench``.
    """
    candidate = PACKAGE_DIR.parent
    pyproject = candidate / "pyproject.toml"

    if pyproject.is_file() and _names_clipbench(pyproject):
        return candidate

    return Path.cwd()


def _names_clipbench(pyproject: Path) -> bool:
    # A line match instead of tomllib keeps Python 3.10 supported without tomli.
    text = pyproject.read_text(encoding="utf-8")
    return re.search(r"""^\s*name\s*=\s*["']clipbench["']\s*$""", text, re.MULTILINE) is not None


def default_tracking_uri() -> str:
    """Return the absolute SQLite URI of the default store, creating ``mlruns/`` if missing."""
    store_dir = (repository_root() / STORE_DIR_NAME).resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store_dir / DATABASE_FILE_NAME).as_posix()}"


def resolve_tracking_uri(configured: str | None) -> str:
    """Pick the tracking URI: ``configured``, then ``MLFLOW_TRACKING_URI``, then the default.

    An empty or blank value counts as unset.
    """
    if configured is not None and configured.strip():
        return configured.strip()

    from_environment = os.environ.get("MLFLOW_TRACKING_URI", "")
    if from_environment.strip():
        return from_environment.strip()

    return default_tracking_uri()


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


def _check_artifact_paths(artifact_paths: Sequence[Path | str]) -> list[Path]:
    """Return the artifact paths as absolute paths, or raise FileNotFoundError for a missing one."""
    paths = [Path(path).resolve() for path in artifact_paths]

    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"Artifact path for MLflow not found: {path}")

    return paths


def _sqlite_database_path(tracking_uri: str) -> Path | None:
    """Return the database file of a ``sqlite:`` URI, or None for other URIs and in-memory databases."""
    if not tracking_uri.startswith("sqlite:///"):
        return None

    location = unquote(tracking_uri[len("sqlite:///") :].split("?", 1)[0])
    if location in {"", ":memory:"}:
        return None

    return Path(location).resolve()


def _experiment_artifact_location(database_path: Path, experiment_name: str) -> str:
    """Return a ``file://`` URI for the experiment's artifacts in ``artifacts/`` beside the database."""
    folder_name = re.sub(r"[^A-Za-z0-9._-]", "_", experiment_name).lstrip(".") or "_"
    return (database_path.parent / ARTIFACTS_DIR_NAME / folder_name).as_uri()


def _store_lock(database_path: Path | None) -> AbstractContextManager[object]:
    """Lock a SQLite store against parallel jobs while its tables and experiments are created."""
    if database_path is None:
        return nullcontext()

    database_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = database_path.with_name(database_path.name + ".lock")
    return filelock.FileLock(str(lock_path), timeout=EXPERIMENT_LOCK_TIMEOUT_S)


def _get_or_create_experiment(
    client: MlflowClient, experiment_name: str, artifact_location: str | None
) -> str:
    """Return the experiment's id and create the experiment if needed.

    Failed attempts are retried with growing delays, because other writers may race.
    """
    for attempt in range(1, EXPERIMENT_ATTEMPTS):
        try:
            return _find_or_create_experiment(client, experiment_name, artifact_location)
        except MlflowException as error:
            delay_s = EXPERIMENT_RETRY_DELAY_S * 2 ** (attempt - 1) * (1 + random.random())
            logger.warning(
                "Creating MLflow experiment %r failed (attempt %d of %d), retrying in %.2f s: %s",
                experiment_name,
                attempt,
                EXPERIMENT_ATTEMPTS,
                delay_s,
                error,
            )
            time.sleep(delay_s)

    return _find_or_create_experiment(client, experiment_name, artifact_location)


def _find_or_create_experiment(
    client: MlflowClient, experiment_name: str, artifact_location: str | None
) -> str:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return experiment.experiment_id

    experiment_id = client.create_experiment(experiment_name, artifact_location=artifact_location)
    logger.info(
        "Created MLflow experiment %r (id %s) with artifacts in %s",
        experiment_name,
        experiment_id,
        artifact_location or "the store's default location",
    )
    return experiment_id


def _open_experiment(tracking_uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """Connect to the store and return a client and the experiment id.

    For a SQLite store, a new experiment keeps its artifacts beside the database, because
    MLflow's default artifact root is relative to the current directory.
    """
    database_path = _sqlite_database_path(tracking_uri)
    artifact_location = None
    if database_path is not None:
        artifact_location = _experiment_artifact_location(database_path, experiment_name)

    # NOTE: MLflow creates the "Default" experiment together with the database, so that
    # experiment keeps its artifacts under the working directory of the first client.

    # Building the client creates the tables of a fresh database, and parallel jobs race there too.
    with _store_lock(database_path):
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = _get_or_create_experiment(client, experiment_name, artifact_location)

    return client, experiment_id


def _chunks(items: Sequence[_Value], size: int) -> Iterator[Sequence[_Value]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _log_values(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
) -> None:
    """Log params, metrics and tags in batches within MLflow's per-request limits."""
    timestamp_ms = int(time.time() * 1000)

    param_entities = [Param(key, value) for key, value in params.items()]
    for batch in _chunks(param_entities, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=batch, synchronous=True)

    metric_entities = [Metric(key, value, timestamp_ms, 0) for key, value in metrics.items()]
    for batch in _chunks(metric_entities, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch, synchronous=True)

    tag_entities = [RunTag(key, value) for key, value in tags.items()]
    for batch in _chunks(tag_entities, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=batch, synchronous=True)


def _log_artifacts(
    client: MlflowClient,
    run_id: str,
    artifact_paths: Sequence[Path],
    long_values: Mapping[str, Mapping[str, str]],
) -> None:
    """Upload files, the contents of folders, and one JSON file per group of over-long values."""
    for path in artifact_paths:
        if path.is_dir():
            client.log_artifacts(run_id, str(path))
        else:
            client.log_artifact(run_id, str(path))

    for artifact_file, values in long_values.items():
        if values:
            client.log_dict(run_id, dict(values), artifact_file)


def _redact_uri(uri: str) -> str:
    """Return ``uri`` without a user name or password, for messages and links."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri

    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """Return the MLflow UI link of a run on an http(s) server, or None for other stores."""
    if urlsplit(tracking_uri).scheme not in {"http", "https"}:
        return None

    base = _redact_uri(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def log_evaluation_run(
    *,
    tracking_uri: str | None,
    experiment_name: str,
    run_name: str | None,
    params: Mapping[str, object],
    metrics: Mapping[str, float | int | None],
    tags: Mapping[str, str],
    artifact_paths: Sequence[Path | str],
    parent_run_id: str | None = None,
) -> TrackingResult:
    """Log one finished evaluation as an MLflow run with status FINISHED.

    ``tracking_uri`` goes through ``resolve_tracking_uri``. Keys are sanitized, None
    metrics are skipped, and over-long param and tag values go to ``long_params.json``
    and ``long_tags.json``. A folder in ``artifact_paths`` uploads its contents to the
    run's artifact root. ``parent_run_id`` nests the run under an existing run.

    Raises ConfigError for an empty experiment name, ValueError for a metric that is not
    a number, and FileNotFoundError for a missing artifact path, all before the store is
    contacted. Any failure of the store raises TrackingError naming the store, and a run
    that was already created ends with status FAILED.
    """
    if not experiment_name.strip():
        raise ConfigError("MLflow experiment name must not be empty")

    logged_params, long_params = split_params(params)
    numeric_metrics = _prepare_metrics(metrics)
    logged_tags, long_tags = _prepare_tags(tags)
    paths = _check_artifact_paths(artifact_paths)

    resolved_uri = resolve_tracking_uri(tracking_uri)
    long_values = {LONG_PARAMS_ARTIFACT: long_params, LONG_TAGS_ARTIFACT: long_tags}

    with _tracking_errors(resolved_uri, experiment_name):
        client, experiment_id = _open_experiment(resolved_uri, experiment_name)
        run_tags = _parent_tags(client, parent_run_id)
        run = client.create_run(experiment_id, tags=run_tags, run_name=run_name)

    run_id = run.info.run_id
    with _tracking_errors(resolved_uri, experiment_name), _terminated_run(client, run_id):
        _log_values(client, run_id, logged_params, numeric_metrics, logged_tags)
        _log_artifacts(client, run_id, paths, long_values)

    logger.info(
        "Logged MLflow run %s in experiment %r (id %s) to %s",
        run_id,
        experiment_name,
        experiment_id,
        _redact_uri(resolved_uri),
    )
    return TrackingResult(
        run_id=run_id,
        experiment_id=experiment_id,
        tracking_uri=resolved_uri,
        run_url=_run_url(resolved_uri, experiment_id, run_id),
    )


def _parent_tags(client: MlflowClient, parent_run_id: str | None) -> dict[str, str]:
    """Return the tag that nests a run under ``parent_run_id``, after checking that the parent exists."""
    if parent_run_id is None:
        return {}

    client.get_run(parent_run_id)
    return {MLFLOW_PARENT_RUN_ID: parent_run_id}


@contextmanager
def _tracking_errors(tracking_uri: str, experiment_name: str) -> Iterator[None]:
    """Re-raise any exception from MLflow or its backends as TrackingError."""
    try:
        yield
    # MLflow backends raise MlflowException, OSError, SQLAlchemy and HTTP errors alike,
    # and every one of them only means that tracking failed.
    except Exception as error:
        store = _redact_uri(tracking_uri)
        raise TrackingError(
            f"Logging to MLflow store {store} (experiment {experiment_name!r}) failed: {error}. "
            "The evaluation results already written to the run directory are unaffected."
        ) from error


@contextmanager
def _terminated_run(client: MlflowClient, run_id: str) -> Iterator[None]:
    """End the run as FINISHED, as FAILED on an exception, or as KILLED on an interrupt."""
    try:
        yield
    except Exception:
        _set_status(client, run_id, RunStatus.FAILED)
        raise
    except BaseException:
        _set_status(client, run_id, RunStatus.KILLED)
        raise

    client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))


def _set_status(client: MlflowClient, run_id: str, status: int) -> None:
    """Set a final run status after an error. A failure here is logged, not raised."""
    status_name = RunStatus.to_string(status)
    try:
        client.set_terminated(run_id, status=status_name)
    except Exception:
        logger.exception("Failed to mark MLflow run %s as %s", run_id, status_name)


def git_commit(repo_root: Path | None = None) -> str | None:
    """Return the checked-out commit sha, with ``-dirty`` if tracked files have changes.

    Returns None outside a git checkout, in a repository without commits, or when git is
    not installed. ``repo_root`` defaults to ``repository_root()``.
    """
    folder = repository_root() if repo_root is None else Path(repo_root)

    sha = _run_git(folder, "rev-parse", "--verify", "HEAD")
    if sha is None:
        return None

    changes = _run_git(folder, "status", "--porcelain", "--untracked-files=no")
    if changes:
        return f"{sha}-dirty"
    return sha


def _run_git(folder: Path, *arguments: str) -> str | None:
    """Return git's stripped standard output, or None if git fails or is missing."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(folder), *arguments],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.debug("git %s in %s failed: %s", " ".join(arguments), folder, error)
        return None

    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


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
