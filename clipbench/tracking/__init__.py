"""Log one finished evaluation to MLflow as a single run.

Callers write their results to a run directory first and call ``log_evaluation_run``
afterwards, so a tracking failure (``TrackingError``) loses nothing on disk.

The default store is the SQLite database ``<repository root>/mlruns/mlflow.db`` with
artifacts in ``<repository root>/mlruns/artifacts``. Both paths are absolute because
Hydra changes the working directory of every job. MLflow 3.17 rejects a plain
``./mlruns`` file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set, so this module never
creates one.

Submodules: ``store`` resolves the URI and opens the store, ``keys`` turns values into
valid MLflow entries, ``runs`` logs the run, and ``git`` reads the checked-out commit.
"""

from clipbench.tracking.git import git_commit
from clipbench.tracking.keys import flatten_config, sanitize_key, split_params
from clipbench.tracking.runs import TrackingError, TrackingResult, log_evaluation_run, log_failed_run
from clipbench.tracking.store import default_tracking_uri, repository_root, resolve_tracking_uri

__all__ = [
    "TrackingError",
    "TrackingResult",
    "default_tracking_uri",
    "flatten_config",
    "git_commit",
    "log_evaluation_run",
    "log_failed_run",
    "repository_root",
    "resolve_tracking_uri",
    "sanitize_key",
    "split_params",
]
