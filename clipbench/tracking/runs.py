"""Log one finished evaluation as an MLflow run and manage the run's lifecycle.

``log_evaluation_run`` creates the run, logs params, metrics and tags in batches,
uploads artifacts and ends the run as FINISHED, or as FAILED or KILLED when logging
stops early. Any failure of the store is raised as ``TrackingError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from clipbench.errors import ClipbenchError, ConfigError
from clipbench.tracking.keys import (
    LONG_PARAMS_ARTIFACT,
    LONG_TAGS_ARTIFACT,
    _prepare_metrics,
    _prepare_tags,
    split_params,
)
from clipbench.tracking.store import _open_experiment, redact_uri, _run_url, resolve_tracking_uri

logger = logging.getLogger(__name__)

_Value = TypeVar("_Value")

# Tag that carries the error message of a job recorded as FAILED.
ERROR_TAG = "clipbench.error"


class TrackingError(ClipbenchError, RuntimeError):
    """Failure of an MLflow store to accept or complete a logging request."""


@dataclass
class TrackingResult:
    """Identifiers of a logged run. ``run_url`` is the UI link on http(s) stores, else None."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    run_url: str | None


def _check_artifact_paths(artifact_paths: Sequence[Path | str]) -> list[Path]:
    """Return the artifact paths as absolute paths, or raise FileNotFoundError for a missing one."""
    paths = [Path(path).resolve() for path in artifact_paths]

    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"Artifact path for MLflow not found: {path}")

    return paths


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
        redact_uri(resolved_uri),
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
        store = redact_uri(tracking_uri)
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


def log_failed_run(
    *,
    tracking_uri: str | None,
    experiment_name: str,
    run_name: str | None,
    params: Mapping[str, object],
    tags: Mapping[str, str],
    error: str,
    parent_run_id: str | None = None,
) -> TrackingResult:
    """Record a job that could not run as an MLflow run with status FAILED and its error message.

    The message goes into the tag ``ERROR_TAG`` (over-long values into an artifact).
    """
    logged_params, long_params = split_params(params)
    logged_tags, long_tags = _prepare_tags({**tags, ERROR_TAG: error})
    resolved_uri = resolve_tracking_uri(tracking_uri)

    with _tracking_errors(resolved_uri, experiment_name):
        client, experiment_id = _open_experiment(resolved_uri, experiment_name)
        run = client.create_run(experiment_id, tags=_parent_tags(client, parent_run_id), run_name=run_name)
        _log_values(client, run.info.run_id, logged_params, {}, logged_tags)
        _log_artifacts(client, run.info.run_id, [], {LONG_PARAMS_ARTIFACT: long_params, LONG_TAGS_ARTIFACT: long_tags})
        client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))

    logger.info("Logged FAILED MLflow run %s in experiment %r: %s", run.info.run_id, experiment_name, error)
    return TrackingResult(run.info.run_id, experiment_id, resolved_uri, _run_url(resolved_uri, experiment_id, run.info.run_id))
