"""Tests for clipbench.tracking against real MLflow SQLite stores under tmp_path."""

from __future__ import annotations

import json
import math
import multiprocessing
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH
from omegaconf import OmegaConf

from clipbench.errors import ClipbenchError, ConfigError
from clipbench.tracking import (
    TrackingError,
    TrackingResult,
    default_tracking_uri,
    flatten_config,
    git_commit,
    log_evaluation_run,
    repository_root,
    resolve_tracking_uri,
    sanitize_key,
    split_params,
)
from clipbench.tracking import store

CHECKOUT = Path(store.__file__).resolve().parents[2]
EXPERIMENT = "zero-shot/shapes"


@pytest.fixture(autouse=True)
def no_environment_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's MLFLOW_TRACKING_URI from sending test runs to a real store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished evaluation's run directory: one results file and a folder of plots."""
    folder = tmp_path / "run"
    (folder / "plots").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"top1": 0.5}), encoding="utf-8")
    (folder / "plots" / "confusion.txt").write_text("3 1\n0 4\n", encoding="utf-8")
    return folder


def log_minimal_run(uri: str, **overrides: object) -> TrackingResult:
    """Log a run with small defaults, replaced by any keyword arguments given."""
    arguments: dict[str, object] = {
        "tracking_uri": uri,
        "experiment_name": EXPERIMENT,
        "run_name": "minimal",
        "params": {"model.name": "clipbench-tiny"},
        "metrics": {"top1": 0.5},
        "tags": {"task": "zero-shot"},
        "artifact_paths": [],
    }
    arguments.update(overrides)
    return log_evaluation_run(**arguments)  # type: ignore[arg-type]


def artifact_names(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {entry.path for entry in client.list_artifacts(run_id, folder)}


def read_artifact_json(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> dict:
    local_path = client.download_artifacts(run_id, name, dst_path=str(tmp_path / "downloads"))
    return json.loads(Path(local_path).read_text(encoding="utf-8"))


def log_parallel_worker(uri: str, index: int, barrier: object, results: object) -> None:
    """Run in a spawned process: wait for all workers, then log one run and report its id."""
    barrier.wait(timeout=300)  # type: ignore[attr-defined]

    try:
        result = log_minimal_run(uri, run_name=f"worker-{index}", params={"worker": index})
        results.put((index, result.run_id, result.experiment_id))  # type: ignore[attr-defined]
    except Exception as error:  # reported to the parent process, which fails the test
        results.put((index, None, repr(error)))  # type: ignore[attr-defined]


def test_configured_uri_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////from/environment.db")

    assert resolve_tracking_uri("sqlite:////from/config.db") == "sqlite:////from/config.db"


def test_environment_uri_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////from/environment.db")

    assert resolve_tracking_uri(None) == "sqlite:////from/environment.db"


def test_blank_sources_fall_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")

    assert resolve_tracking_uri("") == default_tracking_uri()
    assert resolve_tracking_uri(None) == default_tracking_uri()


def test_repository_root_is_checkout() -> None:
    assert repository_root() == CHECKOUT


def test_default_uri_absolute_in_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = default_tracking_uri()
    database_path = Path(uri.removeprefix("sqlite:///"))

    assert uri.startswith("sqlite:////")
    assert database_path.is_absolute()
    assert database_path == CHECKOUT / "mlruns" / "mlflow.db"
    assert database_path.parent.is_dir()

    monkeypatch.chdir(tmp_path)

    assert default_tracking_uri() == uri
    assert resolve_tracking_uri(None) == uri


def test_logged_run_reads_back(store_uri: str, run_dir: Path) -> None:
    result = log_evaluation_run(
        tracking_uri=store_uri,
        experiment_name=EXPERIMENT,
        run_name="tiny-on-shapes",
        params={"model.name": "clipbench-tiny", "data.batch_size": 32, "data.templates": ["a {}"]},
        metrics={"top1": 0.75, "top5": 1, "mean_per_class_recall": None, "loss": float("nan")},
        tags={"task": "zero-shot", "git_commit": "abc123"},
        artifact_paths=[run_dir / "results.json", run_dir / "plots"],
    )
    client = MlflowClient(tracking_uri=store_uri)
    run = client.get_run(result.run_id)

    assert result.tracking_uri == store_uri
    assert result.run_url is None
    assert result.experiment_id == client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny-on-shapes"
    assert run.data.params["model.name"] == "clipbench-tiny"
    assert run.data.params["data.batch_size"] == "32"
    assert run.data.params["data.templates"] == '["a {}"]'
    assert run.data.metrics["top1"] == 0.75
    assert run.data.metrics["top5"] == 1.0
    assert math.isnan(run.data.metrics["loss"])
    assert "mean_per_class_recall" not in run.data.metrics
    assert run.data.tags["task"] == "zero-shot"
    assert run.data.tags["git_commit"] == "abc123"
    assert artifact_names(client, result.run_id) == {"results.json", "confusion.txt"}


def test_artifacts_stored_beside_database(
    store_uri: str, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    working_dir = tmp_path / "hydra_output"
    working_dir.mkdir()
    monkeypatch.chdir(working_dir)

    result = log_minimal_run(store_uri, artifact_paths=[run_dir / "results.json"])
    run = MlflowClient(tracking_uri=store_uri).get_run(result.run_id)
    artifact_dir = Path(local_file_uri_to_path(run.info.artifact_uri))
    artifacts_root = tmp_path / "store" / "artifacts"

    assert artifact_dir.is_relative_to(artifacts_root)
    assert (artifact_dir / "results.json").is_file()
    assert not (working_dir / "mlartifacts").exists()
    assert not (working_dir / "mlruns").exists()
    assert list(working_dir.iterdir()) == []


def test_long_param_goes_to_artifact(store_uri: str, tmp_path: Path) -> None:
    long_value = "x" * 10_000

    result = log_minimal_run(store_uri, params={"classnames": long_value, "model.name": "tiny"})
    client = MlflowClient(tracking_uri=store_uri)
    run = client.get_run(result.run_id)

    assert run.info.status == "FINISHED"
    assert run.data.params["classnames"] == "<see artifact long_params.json>"
    assert run.data.params["model.name"] == "tiny"
    assert "long_params.json" in artifact_names(client, result.run_id)
    assert read_artifact_json(client, result.run_id, "long_params.json", tmp_path) == {
        "classnames": long_value
    }


def test_long_tag_goes_to_artifact(store_uri: str, tmp_path: Path) -> None:
    long_value = "t" * 9_000

    result = log_minimal_run(store_uri, tags={"note": long_value})
    client = MlflowClient(tracking_uri=store_uri)
    run = client.get_run(result.run_id)

    assert run.data.tags["note"] == "<see artifact long_tags.json>"
    assert read_artifact_json(client, result.run_id, "long_tags.json", tmp_path) == {"note": long_value}
    assert "long_params.json" not in artifact_names(client, result.run_id)


def test_split_params_at_length_limit() -> None:
    at_limit = "a" * MAX_PARAM_VAL_LENGTH
    over_limit = "b" * (MAX_PARAM_VAL_LENGTH + 1)

    loggable, too_long = split_params({"fits": at_limit, "spills": over_limit, "n": 3, "pair": (1, 2)})

    assert loggable["fits"] == at_limit
    assert loggable["spills"] == "<see artifact long_params.json>"
    assert loggable["n"] == "3"
    assert loggable["pair"] == "[1, 2]"
    assert too_long == {"spills": over_limit}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("model.name", "model.name"),
        ("top1/imagenet val", "top1/imagenet val"),
        ("top-1@imagenet", "top-1_imagenet"),
        ("latency:ms", "latency_ms"),
        ("line\nbreak", "line_break"),
        ("/leading//double/trailing/", "leading/double/trailing"),
        ("a/../b", "a/__/b"),
        ("./a", "_/a"),
        ("..hidden", "__hidden"),
        (".dotfile", ".dotfile"),
        ("", "_"),
        ("///", "_"),
    ],
)
def test_sanitize_key_cases(key: str, expected: str) -> None:
    assert sanitize_key(key) == expected


def test_sanitize_key_shortens_long_keys() -> None:
    first = sanitize_key("k" * 300 + "1")
    second = sanitize_key("k" * 300 + "2")

    assert len(first) == MAX_ENTITY_KEY_LENGTH
    assert len(second) == MAX_ENTITY_KEY_LENGTH
    assert first != second


def test_invalid_keys_logged_sanitized(store_uri: str) -> None:
    result = log_minimal_run(
        store_uri,
        params={"prompt@template": "a photo of a {}"},
        metrics={"top1@shapes": 0.5},
        tags={"owner:team": "vision"},
    )
    run = MlflowClient(tracking_uri=store_uri).get_run(result.run_id)

    assert run.info.status == "FINISHED"
    assert run.data.params["prompt_template"] == "a photo of a {}"
    assert run.data.metrics["top1_shapes"] == 0.5
    assert run.data.tags["owner_team"] == "vision"


def test_colliding_keys_stay_distinct(store_uri: str) -> None:
    result = log_minimal_run(store_uri, params={"a:b": "colon", "a@b": "at", "a_b": "plain"})
    params = MlflowClient(tracking_uri=store_uri).get_run(result.run_id).data.params

    assert sorted(params.values()) == ["at", "colon", "plain"]
    assert set(params) == {"a_b", "a_b_2", "a_b_3"}


def test_batches_over_limits_logged(store_uri: str) -> None:
    params = {f"param_{index}": index for index in range(250)}
    metrics = {f"metric_{index}": float(index) for index in range(1_200)}
    tags = {f"tag_{index}": str(index) for index in range(150)}

    result = log_minimal_run(store_uri, params=params, metrics=metrics, tags=tags)
    run = MlflowClient(tracking_uri=store_uri).get_run(result.run_id)

    assert len(run.data.params) == 250
    assert len(run.data.metrics) == 1_200
    assert all(f"tag_{index}" in run.data.tags for index in range(150))
    assert run.data.metrics["metric_1199"] == 1199.0


def test_unusable_store_raises_tracking_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the store folder should be", encoding="utf-8")
    uri = f"sqlite:///{(blocker / 'mlflow.db').as_posix()}"

    with pytest.raises(TrackingError) as caught:
        log_minimal_run(uri)

    assert uri in str(caught.value)
    assert "run directory" in str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value, ClipbenchError)


def test_file_store_raises_tracking_error(tmp_path: Path) -> None:
    uri = (tmp_path / "mlruns").as_uri()

    with pytest.raises(TrackingError) as caught:
        log_minimal_run(uri)

    assert uri in str(caught.value)


def test_failed_upload_marks_run_failed(store_uri: str, run_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("artifacts cannot be written below a file", encoding="utf-8")
    client = MlflowClient(tracking_uri=store_uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(blocker / "artifacts").as_uri())

    with pytest.raises(TrackingError) as caught:
        log_minimal_run(store_uri, artifact_paths=[run_dir / "results.json"])
    runs = client.search_runs([experiment_id])

    assert store_uri in str(caught.value)
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.metrics["top1"] == 0.5


class FlakyExperimentClient:
    """Stand-in for MlflowClient whose first ``failures`` create_experiment calls fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.create_calls = 0

    def get_experiment_by_name(self, name: str) -> None:
        return None

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        self.create_calls += 1
        if self.create_calls <= self.failures:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "42"


def test_experiment_creation_retries_races(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "EXPERIMENT_RETRY_DELAY_S", 0.0)
    client = FlakyExperimentClient(failures=store.EXPERIMENT_ATTEMPTS - 1)

    experiment_id = store._get_or_create_experiment(client, EXPERIMENT, None)  # type: ignore[arg-type]

    assert experiment_id == "42"
    assert client.create_calls == store.EXPERIMENT_ATTEMPTS


def test_experiment_creation_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "EXPERIMENT_RETRY_DELAY_S", 0.0)
    client = FlakyExperimentClient(failures=store.EXPERIMENT_ATTEMPTS)

    with pytest.raises(MlflowException, match="database is locked"):
        store._get_or_create_experiment(client, EXPERIMENT, None)  # type: ignore[arg-type]

    assert client.create_calls == store.EXPERIMENT_ATTEMPTS


def test_parent_run_id_nests_run(store_uri: str) -> None:
    parent = log_minimal_run(store_uri, run_name="sweep")

    child = log_minimal_run(store_uri, run_name="member", parent_run_id=parent.run_id)
    tags = MlflowClient(tracking_uri=store_uri).get_run(child.run_id).data.tags

    assert tags["mlflow.parentRunId"] == parent.run_id


def test_missing_parent_raises_tracking_error(store_uri: str) -> None:
    with pytest.raises(TrackingError) as caught:
        log_minimal_run(store_uri, parent_run_id="0123456789abcdef0123456789abcdef")

    assert "0123456789abcdef0123456789abcdef" in str(caught.value)


def test_bad_inputs_rejected_before_store(store_uri: str, tmp_path: Path) -> None:
    database_path = tmp_path / "store" / "mlflow.db"

    with pytest.raises(ValueError, match="top1"):
        log_minimal_run(store_uri, metrics={"top1": "high"})
    with pytest.raises(ValueError, match="top5"):
        log_minimal_run(store_uri, metrics={"top5": object()})
    with pytest.raises(FileNotFoundError, match="missing.json"):
        log_minimal_run(store_uri, artifact_paths=[tmp_path / "missing.json"])
    with pytest.raises(ConfigError):
        log_minimal_run(store_uri, experiment_name="  ")

    assert not database_path.exists()


def test_environment_store_used_without_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{(tmp_path / 'env_store' / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    result = log_minimal_run(None)

    assert result.tracking_uri == uri
    assert MlflowClient(tracking_uri=uri).get_run(result.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_parallel_jobs_share_fresh_store(store_uri: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    workers = [
        context.Process(target=log_parallel_worker, args=(store_uri, index, barrier, results))
        for index in range(4)
    ]

    for worker in workers:
        worker.start()
    reports = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)

    failures = [report for report in reports if report[1] is None]
    experiment = MlflowClient(tracking_uri=store_uri).get_experiment_by_name(EXPERIMENT)
    runs = MlflowClient(tracking_uri=store_uri).search_runs([experiment.experiment_id])

    assert failures == []
    assert {report[2] for report in reports} == {experiment.experiment_id}
    assert len(runs) == 4
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.params["worker"] for run in runs} == {"0", "1", "2", "3"}
    assert all(worker.exitcode == 0 for worker in workers)


def test_run_url_for_http_servers() -> None:
    url = store._run_url("https://user:secret@mlflow.example.org:5000/", "7", "abc")

    assert url == "https://mlflow.example.org:5000/#/experiments/7/runs/abc"
    assert store._run_url("http://127.0.0.1:5000", "1", "r") == "http://127.0.0.1:5000/#/experiments/1/runs/r"
    assert store._run_url("sqlite:////tmp/mlflow.db", "1", "r") is None


def git(folder: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=Test", "-c", "user.email=test@example.org", *arguments],
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


def test_git_commit_in_checkout(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")
    (tmp_path / "tracked.txt").write_text("first\n", encoding="utf-8")
    git(tmp_path, "add", "tracked.txt")
    git(tmp_path, "commit", "--quiet", "-m", "Add tracked file")
    sha = git(tmp_path, "rev-parse", "HEAD")

    assert git_commit(tmp_path) == sha

    (tmp_path / "untracked.txt").write_text("new\n", encoding="utf-8")

    assert git_commit(tmp_path) == sha

    (tmp_path / "tracked.txt").write_text("changed\n", encoding="utf-8")

    assert git_commit(tmp_path) == f"{sha}-dirty"


def test_git_commit_outside_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))

    assert git_commit(tmp_path) is None


def test_git_commit_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")

    assert git_commit(tmp_path) is None


def test_flatten_config_nested_and_lists() -> None:
    config = {
        "model": {"name": "clipbench-tiny", "precision": {"amp": False}},
        "data": {"templates": ["a photo of a {}.", "a {}."], "splits": {}},
        "seed": 0,
    }

    flat = flatten_config(config)

    assert flat == {
        "model.name": "clipbench-tiny",
        "model.precision.amp": False,
        "data.templates": '["a photo of a {}.", "a {}."]',
        "data.splits": "{}",
        "seed": 0,
    }


def test_flatten_config_accepts_omegaconf() -> None:
    config = OmegaConf.create({"model": {"name": "tiny"}, "ids": [1, {"k": 2}], "alias": "${model.name}"})

    flat = flatten_config(config)

    assert flat["model.name"] == "tiny"
    assert flat["ids"] == '[1, {"k": 2}]'
    assert flat["alias"] == "tiny"
    assert flatten_config({"x": 1}, prefix="cfg") == {"cfg.x": 1}
