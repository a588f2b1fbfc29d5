"""Model-comparison sweeps: parent and child runs, resume, failing jobs, parallel jobs, launcher presets."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clipbench.sweep import FINGERPRINT_TAG, SWEEP_ID_TAG, SWEEP_PARENT_TAG, SWEEP_POSITION_TAG
from test_cli import CLIPBENCH, FAST, run_cli

EXPERIMENT = "sweep-test"


def sweep_runs(tracking_uri: str) -> tuple[list, list]:
    """Return (parent runs, child runs) of the test experiment."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(SWEEP_PARENT_TAG) == "true"]
    children = [r for r in runs if SWEEP_ID_TAG in r.data.tags]
    return parents, children


def run_sweep(tmp_path: Path, *overrides: str, env_updates=None, timeout_s: int = 600):
    return run_cli(["eval", "-m", *overrides, f"tracking.experiment={EXPERIMENT}", *FAST], cwd=tmp_path,
                   env_updates=env_updates, timeout_s=timeout_s)


@pytest.mark.slow
def test_three_job_sweep(tmp_path, tracking_uri):
    completed = run_sweep(tmp_path, "dataset.images_per_class=1,2,3")
    assert completed.returncode == 0, completed.stderr[-3000:]

    parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(children) == 3
    assert {c.data.tags[SWEEP_ID_TAG] for c in children} == {parent.info.run_id}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags[SWEEP_POSITION_TAG] for c in children) == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["dataset_size"] for c in children) == ["24", "48", "72"]

    client = MlflowClient(tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert artifacts == {"comparison/comparison.csv", "comparison/comparison.md", "comparison/accuracy_vs_latency.png"}

    table = Path(client.download_artifacts(parent.info.run_id, "comparison/comparison.csv", str(tmp_path)))
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    top1_by_run = sorted(c.data.metrics["top1"] for c in children)
    assert sorted(float(row["top1"]) for row in rows) == pytest.approx(top1_by_run)
    for child in children:
        assert "gflops_per_image" in child.data.metrics
        assert child.data.metrics["params_total_millions"] == pytest.approx(7.979009, abs=1e-4)


@pytest.mark.slow
def test_rerun_skips_finished_jobs(tmp_path, tracking_uri):
    first = run_sweep(tmp_path, "dataset.images_per_class=1,2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_sweep(tmp_path, "dataset.images_per_class=1,2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (second.stdout + second.stderr).count("Skipping job") == 2

    parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1
    assert len(children) == 2
    fingerprints = [c.data.tags[FINGERPRINT_TAG] for c in children]
    assert len(set(fingerprints)) == 2


@pytest.mark.slow
def test_force_reruns_jobs(tmp_path, tracking_uri):
    assert run_sweep(tmp_path, "dataset.images_per_class=1").returncode == 0
    forced = run_sweep(tmp_path, "dataset.images_per_class=1", "sweep.force=true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    _, children = sweep_runs(tracking_uri)
    assert len(children) == 2


@pytest.mark.slow
def test_resume_after_killed_job(tmp_path, tracking_uri):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env.pop("HYDRA_FULL_ERROR", None)
    # Later jobs are larger, so the sweep is still running when the first job has finished.
    sweep = ["dataset.images_per_class=1,40,41"]
    command = [CLIPBENCH, "eval", "-m", *sweep, f"tracking.experiment={EXPERIMENT}", *FAST]
    # Create the store's tables now: polling a database that the sweep is still creating races its migration.
    MlflowClient(tracking_uri).search_experiments()
    log_path = tmp_path / "killed_sweep.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        finished = 0
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            try:
                finished = len([c for c in sweep_runs(tracking_uri)[1] if c.info.status == "FINISHED"])
            except Exception:  # the store may not exist yet
                continue
            if finished >= 1:
                break
        assert finished >= 1, f"no job finished before the kill:\n{log_path.read_text()[-3000:]}"
        assert process.poll() is None, "the sweep ended before it could be killed"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        log_file.close()

    _, before = sweep_runs(tracking_uri)
    finished_before = {c.data.tags[FINGERPRINT_TAG] for c in before if c.info.status == "FINISHED"}
    assert len(finished_before) < 3

    resumed = run_sweep(tmp_path, *sweep)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1
    assert parents[0].info.status == "FINISHED"
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 3
    assert len({c.data.tags[FINGERPRINT_TAG] for c in finished}) == 3
    assert finished_before <= {c.data.tags[FINGERPRINT_TAG] for c in finished}


@pytest.mark.slow
def test_failing_job_recorded(tmp_path, tracking_uri):
    completed = run_sweep(tmp_path, "model=clipbench_tiny,vit_b32_laion2b", f"model.cache_dir={tmp_path / 'hub'}",
                          env_updates={"HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]

    parents, children = sweep_runs(tracking_uri)
    statuses = sorted((c.data.params.get("model"), c.info.status) for c in children)
    assert statuses == [("ViT-B-32", "FAILED"), ("clipbench-tiny", "FINISHED")]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "not in the local cache" in failed.data.tags["clipbench.error"]

    client = MlflowClient(tracking_uri)
    report = Path(client.download_artifacts(parents[0].info.run_id, "comparison/comparison.md", str(tmp_path)))
    text = report.read_text()
    assert "Failed" in text
    assert "not in the local cache" in text


@pytest.mark.slow
def test_parallel_joblib_sweep(tmp_path, tracking_uri):
    # The last override starts DataLoader workers inside the joblib workers.
    completed = run_sweep(tmp_path, "dataset.images_per_class=1,2,3,4", "hydra/launcher=local_parallel",
                          "hydra.launcher.n_jobs=4", "runtime.num_workers=2")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "n_jobs=4" in completed.stdout + completed.stderr

    parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1
    assert len(children) == 4
    client = MlflowClient(tracking_uri)
    for child in children:
        assert child.info.status == "FINISHED"
        assert "top1" in child.data.metrics
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"metrics.json", "predictions.csv", "per_class.csv"} <= artifacts
    assert "database is locked" not in completed.stdout + completed.stderr


@pytest.mark.parametrize("launcher", ["local_parallel", "slurm", "ray"])
def test_launcher_presets_compose(launcher):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from clipbench.config import CONF_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    overrides = [f"hydra/launcher={launcher}"]
    if launcher == "slurm":
        overrides += ["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=60",
                      "hydra.launcher.mem_gb=64"]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    launcher_cfg = cfg.hydra.launcher
    if launcher == "local_parallel":
        assert launcher_cfg.n_jobs == 4
        assert "joblib" in launcher_cfg._target_
    if launcher == "slurm":
        assert launcher_cfg._target_.endswith("SlurmLauncher")
        assert launcher_cfg.partition == "gpu"
        assert launcher_cfg.gpus_per_node == 2
        assert launcher_cfg.timeout_min == 60
        assert launcher_cfg.mem_gb == 64
    if launcher == "ray":
        assert launcher_cfg._target_.endswith("RayLauncher")
        assert launcher_cfg.ray.remote.num_gpus == 1


def test_fingerprint_ignores_tracking(compose_config):
    from clipbench.config import validate_config
    from clipbench.sweep import config_fingerprint

    base = config_fingerprint(validate_config(compose_config([])))
    other_store = config_fingerprint(validate_config(compose_config(["tracking.experiment=x", "runtime.progress=false"])))
    other_limit = config_fingerprint(validate_config(compose_config(["dataset.limit_per_class=3"])))
    assert base == other_store
    assert base != other_limit


@pytest.mark.slow
def test_reused_run_in_new_sweep_report(tmp_path, tracking_uri):
    assert run_sweep(tmp_path, "dataset.images_per_class=1").returncode == 0
    wider = run_sweep(tmp_path, "dataset.images_per_class=1,2")
    assert wider.returncode == 0, wider.stderr[-3000:]

    from clipbench.compare import collect_runs

    parents, _ = sweep_runs(tracking_uri)
    assert len(parents) == 2
    newest = max(parents, key=lambda run: run.info.start_time)
    runs = collect_runs(tracking_uri, sweep_id=newest.info.run_id)
    assert len(runs) == 2
    assert sorted(runs["sweep_position"].tolist()) == [0, 1]


def test_missing_launcher_plugin_one_line(tmp_path):
    completed = run_cli(["eval", "-m", "model=clipbench_tiny", "hydra/launcher=slurm"], cwd=tmp_path)
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert 'pip install -e ".[slurm]"' in lines[0]


@pytest.mark.slow
def test_report_names_job_overrides(tmp_path, tracking_uri):
    completed = run_sweep(tmp_path, "dataset.images_per_class=1,2")
    assert completed.returncode == 0, completed.stderr[-3000:]

    from clipbench.compare import collect_runs

    parents, _ = sweep_runs(tracking_uri)
    runs = collect_runs(tracking_uri, sweep_id=parents[0].info.run_id)
    assert sorted(runs["overrides"]) == ["dataset.images_per_class=1", "dataset.images_per_class=2"]


@pytest.mark.slow
def test_rerun_failed_job_listed_once(tmp_path, tracking_uri):
    overrides = ("model=clipbench_tiny,vit_b32_laion2b", f"model.cache_dir={tmp_path / 'hub'}")
    for _ in range(2):
        completed = run_sweep(tmp_path, *overrides, env_updates={"HF_HUB_OFFLINE": "1"})
        assert completed.returncode == 0, completed.stderr[-3000:]

    from clipbench.compare import collect_runs

    parents, children = sweep_runs(tracking_uri)
    assert len(parents) == 1
    assert len([c for c in children if c.info.status == "FAILED"]) == 2
    runs = collect_runs(tracking_uri, sweep_id=parents[0].info.run_id)
    assert sorted(runs["status"]) == ["FAILED", "FINISHED"]
