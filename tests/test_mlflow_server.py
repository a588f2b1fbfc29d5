"""A finished sweep read back through the REST API of a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port, wait_for_http

BIN_DIR = Path(sys.executable).parent
SWEEP_ARGS = ["eval", "-m", "dataset.images_per_class=2,3", "runtime.num_workers=0", "runtime.progress=false",
              "runtime.latency_requests=2"]
CHILD_METRICS = ["top1", "top5", "mean_per_class_recall", "latency_ms_p50", "throughput_images_per_s"]
REPORT_FILES = ["comparison/comparison.csv", "comparison/comparison.md", "comparison/accuracy_vs_latency.png"]
SWEEP_TIMEOUT_S = 300
STARTUP_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15
REQUEST_TIMEOUT_S = 10


@dataclass
class MlflowServer:
    base_url: str
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.is_file():
            return "(no server log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def get(self, endpoint: str, **query: str) -> dict:
        url = f"{self.base_url}{endpoint}?{urllib.parse.urlencode(query)}"
        return self._send(urllib.request.Request(url))

    def post(self, endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.base_url}{endpoint}", data=json.dumps(body).encode("utf-8"),
                                         headers={"Content-Type": "application/json"}, method="POST")
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> dict:
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")
            raise AssertionError(f"{request.get_method()} {request.full_url} failed with HTTP {error.code}: "
                                 f"{detail}\nserver log:\n{self.log_tail()}") from error


def stop_process_group(process: subprocess.Popen) -> None:
    """Send SIGTERM to the server's process group, then SIGKILL if it has not exited in time."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def finished_sweep(sweep_dir) -> str:
    """Run a two-job offline sweep with the console script and return its SQLite store's URI.

    The fixture is module-scoped, so both tests read the same sweep through one server. The store
    is in the module's temporary folder, never in the repository's mlruns/.
    """
    (sweep_dir / "mlruns").mkdir()
    tracking_uri = f"sqlite:///{sweep_dir / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env.pop("HYDRA_FULL_ERROR", None)
    completed = subprocess.run([str(BIN_DIR / "clipbench"), *SWEEP_ARGS], cwd=sweep_dir, env=env,
                               capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return tracking_uri


@pytest.fixture(scope="module")
def mlflow_server(sweep_dir, finished_sweep) -> Iterator[MlflowServer]:
    """Start `mlflow server` on the sweep's store and stop its whole process group afterwards."""
    port = free_port()
    log_path = sweep_dir / "mlflow-server.log"
    command = [str(BIN_DIR / "mlflow"), "server", "--backend-store-uri", finished_sweep,
               "--artifacts-destination", (sweep_dir / "mlartifacts").as_uri(),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = MlflowServer(base_url=f"http://127.0.0.1:{port}", log_path=log_path)

    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=sweep_dir, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            wait_for_http(f"{server.base_url}/health", process, STARTUP_TIMEOUT_S, "mlflow server", server.log_tail)
            yield server
        finally:
            stop_process_group(process)


def search_runs(server: MlflowServer, experiment_id: str) -> list[dict]:
    runs: list[dict] = []
    body = {"experiment_ids": [experiment_id], "max_results": 100}

    while True:
        page = server.post("/api/2.0/mlflow/runs/search", body)
        runs.extend(page.get("runs", []))
        if not page.get("next_page_token"):
            return runs
        body["page_token"] = page["next_page_token"]


def tags_of(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def metrics_of(run: dict) -> dict[str, float]:
    return {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}


@pytest.mark.slow
def test_server_lists_sweep_runs(mlflow_server):
    experiment = mlflow_server.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="clipbench-eval")
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = search_runs(mlflow_server, experiment_id)
    log = mlflow_server.log_tail()

    parents = [run for run in runs if tags_of(run).get("clipbench.sweep_parent") == "true"]
    assert len(parents) == 1, f"expected 1 sweep parent run among {len(runs)} runs\nserver log:\n{log}"
    parent_id = parents[0]["info"]["run_id"]
    assert parents[0]["info"]["status"] == "FINISHED", f"parent run {parent_id}\nserver log:\n{log}"

    children = [run for run in runs if tags_of(run).get("mlflow.parentRunId") == parent_id]
    assert len(children) == 2, f"expected 2 child runs of {parent_id}, found {len(children)}\nserver log:\n{log}"
    for child in children:
        child_id = child["info"]["run_id"]
        assert child["info"]["status"] == "FINISHED", f"child run {child_id}\nserver log:\n{log}"
        assert tags_of(child).get("clipbench.sweep_id") == parent_id, f"child run {child_id}\nserver log:\n{log}"
        metrics = metrics_of(child)
        for name in CHILD_METRICS:
            assert name in metrics, f"child run {child_id} lacks metric {name}: {sorted(metrics)}\nserver log:\n{log}"


@pytest.mark.slow
def test_server_lists_report_artifacts(mlflow_server):
    experiment = mlflow_server.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="clipbench-eval")
    runs = search_runs(mlflow_server, experiment["experiment"]["experiment_id"])
    parents = [run for run in runs if tags_of(run).get("clipbench.sweep_parent") == "true"]
    assert len(parents) == 1, f"expected 1 sweep parent run\nserver log:\n{mlflow_server.log_tail()}"
    parent_id = parents[0]["info"]["run_id"]

    listing = mlflow_server.get("/api/2.0/mlflow/artifacts/list", run_id=parent_id, path="comparison")
    files = {entry["path"]: entry for entry in listing.get("files", [])}
    log = mlflow_server.log_tail()

    for path in REPORT_FILES:
        assert path in files, f"parent run {parent_id} lacks artifact {path}: {sorted(files)}\nserver log:\n{log}"
        assert int(files[path].get("file_size", 0)) > 0, f"artifact {path} is empty\nserver log:\n{log}"
