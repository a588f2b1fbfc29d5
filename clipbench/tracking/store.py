"""Locate and open the MLflow store that runs are logged to.

The tracking URI is the configured value, then ``MLFLOW_TRACKING_URI``, then the SQLite
database under the repository root. A new experiment in a SQLite store keeps its
artifacts beside the database. Experiment creation is retried, and in a SQLite store it
runs under a file lock, because parallel jobs share one database.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import filelock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

# The clipbench/ package folder, one level above this tracking/ package.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
STORE_DIR_NAME = "mlruns"
DATABASE_FILE_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "artifacts"

EXPERIMENT_LOCK_TIMEOUT_S = 120.0
EXPERIMENT_ATTEMPTS = 5
EXPERIMENT_RETRY_DELAY_S = 0.2


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


def redact_uri(uri: str) -> str:
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

    base = redact_uri(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
