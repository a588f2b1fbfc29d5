"""Model-comparison sweeps: one MLflow parent run per Hydra multirun, one child run per job.

``SweepCallback`` (a Hydra callback listed in ``conf/config.yaml``) opens the parent run
before any job starts, so the store and the experiment exist before parallel jobs write
to them, and writes ``clipbench_sweep.json`` into the sweep folder for the jobs to find.
Re-running the same sweep command reopens the same parent run (matched by a key over the
command's overrides), and each job whose configuration fingerprint already has a
FINISHED run is skipped unless ``sweep.force=true``. When the sweep ends, the callback
writes the comparison report and logs it on the parent run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from omegaconf import DictConfig

from clipbench.config import EvalConfig
from clipbench.tracking.store import _open_experiment, resolve_tracking_uri

log = logging.getLogger(__name__)

SWEEP_FILE = "clipbench_sweep.json"
SWEEP_ID_TAG = "clipbench.sweep_id"
SWEEP_KEY_TAG = "clipbench.sweep_key"
SWEEP_PARENT_TAG = "clipbench.sweep_parent"
SWEEP_POSITION_TAG = "clipbench.sweep_position"
FINGERPRINT_TAG = "clipbench.config_fingerprint"
REUSED_TAG_PREFIX = "clipbench.reused."
OVERRIDES_TAG = "clipbench.overrides"

# Settings that do not change an evaluation's results, left out of its fingerprint.
_NOT_IN_FINGERPRINT = {"tracking", "verbose", "sweep"}
_MODEL_NOT_IN_FINGERPRINT = {"cache_dir"}
_RUNTIME_NOT_IN_FINGERPRINT = {"progress", "num_workers", "feature_cache", "cache_dir"}


@dataclass(frozen=True)
class SweepInfo:
    """Location of a sweep's parent run, which each job attaches its run to."""

    parent_run_id: str
    tracking_uri: str
    experiment_name: str
    swept_keys: tuple[str, ...] = ()

    def job_label(self, job_overrides: list[str]) -> str:
        """Return the overrides of a job that the sweep varies, such as ``model=rn50_openai``."""
        return " ".join(o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in self.swept_keys)


def config_fingerprint(cfg: EvalConfig) -> str:
    """Hash the settings that determine an evaluation's results (SHA-256, hex)."""
    values = dataclasses.asdict(cfg)
    for key in _NOT_IN_FINGERPRINT:
        values.pop(key, None)
    for key in _RUNTIME_NOT_IN_FINGERPRINT:
        values["runtime"].pop(key, None)
    for key in _MODEL_NOT_IN_FINGERPRINT:
        values["model"].pop(key, None)
    payload = json.dumps(values, sort_keys=True, default=lambda v: getattr(v, "value", str(v)))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def sweep_key(task_overrides: list[str], experiment_name: str) -> str:
    """Identify a sweep command: the same overrides in any order give the same key.

    ``sweep.*`` settings (force, resume) are left out, so a forced re-run reuses the parent run.
    """
    identifying = sorted(o for o in task_overrides if not o.lstrip("+~").startswith("sweep."))
    payload = json.dumps({"overrides": identifying, "experiment": experiment_name})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def find_finished_run(tracking_uri: str, experiment_name: str, fingerprint: str) -> str | None:
    """Return the id of a FINISHED run with this fingerprint in the experiment, or None."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def open_parent_run(tracking_uri: str, experiment_name: str, key: str, overrides: list[str]) -> str:
    """Reopen the parent run of an earlier attempt at the same sweep, or create one.

    Child runs that an interrupted attempt left RUNNING are marked KILLED: their jobs
    run again.
    """
    client, experiment_id = _open_experiment(tracking_uri, experiment_name)
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_KEY_TAG}` = '{key}'", max_results=1)
    if earlier:
        parent_run_id = earlier[0].info.run_id
        client.update_run(parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        stale = client.search_runs([experiment_id], filter_string=(
            f"tags.`{SWEEP_ID_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"))
        for run in stale:
            client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
        log.info("Resuming sweep: parent run %s (sweep key %s)", parent_run_id, key)
        return parent_run_id

    run = client.create_run(experiment_id, run_name=f"sweep-{key}", tags={
        SWEEP_KEY_TAG: key, SWEEP_PARENT_TAG: "true", "clipbench.sweep_overrides": " ".join(overrides)[:5000]})
    log.info("Started sweep: parent run %s (sweep key %s); compare it later with clipbench compare --sweep %s",
             run.info.run_id, key, run.info.run_id)
    return run.info.run_id


def read_sweep_info(sweep_dir: str | Path) -> SweepInfo | None:
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    values["swept_keys"] = tuple(values.get("swept_keys", ()))
    return SweepInfo(**values)


def swept_keys(command_overrides: list[str]) -> tuple[str, ...]:
    """Return the keys that a sweep command varies (``model`` in ``model=a,b``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(command_overrides)
    return tuple(o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override())


def _tracking_settings(config: DictConfig) -> tuple[str, str]:
    tracking = config.get("tracking") or {}
    return resolve_tracking_uri(tracking.get("uri")), tracking.get("experiment") or "clipbench-eval"


class SweepCallback(Callback):
    """Open the sweep's parent run before the jobs and report on it after them."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("tracking", {}).get("enabled", True):
            return
        tracking_uri, experiment_name = _tracking_settings(config)
        overrides = list(config.hydra.overrides.task)
        key = sweep_key(overrides, experiment_name)
        parent_run_id = open_parent_run(tracking_uri, experiment_name, key, overrides)

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        info = SweepInfo(parent_run_id, tracking_uri, experiment_name, swept_keys(overrides))
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(info)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        info = read_sweep_info(config.hydra.sweep.dir)
        if info is None:
            return
        client = MlflowClient(info.tracking_uri)
        try:
            report_paths = write_sweep_report(info, Path(config.hydra.sweep.dir) / "comparison")
        except Exception:  # the sweep's runs are all logged; a report failure must not hide that
            log.exception("Could not write the comparison report of sweep %s", info.parent_run_id)
            client.set_terminated(info.parent_run_id, status=RunStatus.to_string(RunStatus.FAILED))
            return
        log.info("Comparison report of sweep %s: %s", info.parent_run_id, ", ".join(str(p) for p in report_paths))
        client.set_terminated(info.parent_run_id, status=RunStatus.to_string(RunStatus.FINISHED))


def write_sweep_report(info: SweepInfo, output_dir: Path) -> list[Path]:
    """Write the comparison table and plot of a sweep and log them on its parent run."""
    from clipbench import compare

    runs = compare.collect_runs(info.tracking_uri, sweep_id=info.parent_run_id)
    paths = compare.write_report(runs, output_dir)
    compare.log_report(info.tracking_uri, info.parent_run_id, paths)
    return paths


def sweep_tags(info: SweepInfo, position: int, fingerprint: str, overrides: str = "") -> dict[str, str]:
    return {SWEEP_ID_TAG: info.parent_run_id, SWEEP_POSITION_TAG: str(position), FINGERPRINT_TAG: fingerprint,
            OVERRIDES_TAG: overrides}



def _job_params(cfg: EvalConfig) -> dict[str, object]:
    return {"model": cfg.model.name, "pretrained": cfg.model.pretrained, "checkpoint": cfg.model.checkpoint,
            "dataset": cfg.dataset.name, "templates": cfg.prompts.name, "precision": cfg.runtime.precision.value}


def _note_reused_run(info: SweepInfo, position: int, run_id: str) -> None:
    """Tag the parent run with a FINISHED run from outside this sweep that replaces one of its jobs."""
    client = MlflowClient(info.tracking_uri)
    if client.get_run(run_id).data.tags.get(SWEEP_ID_TAG) != info.parent_run_id:
        client.set_tag(info.parent_run_id, f"{REUSED_TAG_PREFIX}{position}", run_id)


def run_sweep_job(cfg: EvalConfig, run_dir: Path, info: SweepInfo, position: int, overrides: str = ""):
    """Run one job of a sweep: skip it when already evaluated, record it as FAILED when it cannot run.

    ``overrides`` are the job's own Hydra overrides, recorded so that the comparison report
    can tell the jobs apart. Returns the EvaluationResult, or None for a skipped or failed
    job, so that one failing job never stops the others.
    """
    from clipbench.errors import ClipbenchError
    from clipbench.evaluation import run_evaluation
    from clipbench.tracking import log_failed_run

    fingerprint = config_fingerprint(cfg)
    if cfg.sweep.resume and not cfg.sweep.force:
        existing = find_finished_run(info.tracking_uri, info.experiment_name, fingerprint)
        if existing is not None:
            _note_reused_run(info, position, existing)
            log.info("Skipping job %d: FINISHED run %s already has this configuration (sweep.force=true re-runs it)",
                     position, existing)
            return None

    tags = sweep_tags(info, position, fingerprint, overrides)
    try:
        return run_evaluation(cfg, run_dir, parent_run_id=info.parent_run_id, extra_tags=tags)
    except ClipbenchError as err:
        log.error("Job %d failed: %s", position, err)
        log_failed_run(tracking_uri=info.tracking_uri, experiment_name=info.experiment_name,
                       run_name=f"{cfg.model.name}-{cfg.dataset.name}", params=_job_params(cfg), tags=tags,
                       error=str(err), parent_run_id=info.parent_run_id)
        return None
