"""Tests for clipbench.compare and `clipbench compare` against real SQLite MLflow stores."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from clipbench.compare import (
    COMPARISON_COLUMNS,
    RUN_COLUMNS,
    collect_runs,
    comparison_table,
    log_report,
    markdown_table,
    pareto_front,
    scatter_figure,
    write_report,
)
from clipbench.errors import ConfigError
from clipbench.tracking import log_evaluation_run

EXPERIMENT = "compare-test"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Hand-chosen results. vit_l14 has the best top-1 but the highest latency, rn50 is slower
# and less accurate than vit_b32 (so it is dominated), and vit_b16 has no top5 metric.
MODELS = [
    {"model": "rn50", "pretrained": "openai", "param_count_total": 102_000_000,
     "metrics": {"top1": 0.55, "top5": 0.80, "mean_per_class_recall": 0.54, "load_time_s": 2.0,
                 "throughput_images_per_s": 150.0, "latency_ms_p50": 9.0}},
    {"model": "vit_b32", "pretrained": "laion2b_s34b_b79k", "param_count_total": 151_277_313,
     "metrics": {"top1": 0.66, "top5": 0.88, "mean_per_class_recall": 0.65, "load_time_s": 1.5,
                 "throughput_images_per_s": 400.0, "latency_ms_p50": 3.0, "gflops_per_image": 4.4}},
    {"model": "vit_b16", "pretrained": "laion2b_s34b_b88k", "param_count_total": 149_620_737,
     "metrics": {"top1": 0.70, "mean_per_class_recall": 0.69, "load_time_s": 1.8,
                 "throughput_images_per_s": 200.0, "latency_ms_p50": 6.0, "gflops_per_image": 17.6}},
    {"model": "vit_l14", "pretrained": "laion2b_s32b_b82k", "param_count_total": 427_616_513,
     "metrics": {"top1": 0.75, "top5": 0.94, "mean_per_class_recall": 0.74, "load_time_s": 4.0,
                 "throughput_images_per_s": 60.0, "latency_ms_p50": 20.0, "gflops_per_image": 81.1}},
]
FAILED_ERROR = "ModelLoadError: weights for vit_h14 | not found"


def _log_child(parent_id: str, position: int, spec: dict) -> str:
    params = {"model": spec["model"], "pretrained": spec["pretrained"], "dataset": "shapes",
              "templates": "simple", "param_count_total": spec["param_count_total"]}
    result = log_evaluation_run(
        tracking_uri=None, experiment_name=EXPERIMENT, run_name=f"job-{position}", params=params,
        metrics=spec["metrics"], tags={"clipbench.sweep_id": parent_id, "clipbench.sweep_position": str(position)},
        artifact_paths=[], parent_run_id=parent_id,
    )
    return result.run_id


@pytest.fixture
def sweep(tracking_uri) -> dict:
    """A sweep parent with four finished child runs and one failed child run."""
    client = MlflowClient(tracking_uri)
    log_evaluation_run(tracking_uri=None, experiment_name=EXPERIMENT, run_name="unrelated", params={"model": "x"},
                       metrics={"top1": 0.1}, tags={}, artifact_paths=[])
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    parent = client.create_run(experiment_id, tags={"clipbench.sweep_parent": "true"}, run_name="sweep")
    parent_id = parent.info.run_id

    child_ids = [_log_child(parent_id, position, spec) for position, spec in enumerate(MODELS)]

    failed = client.create_run(experiment_id, run_name="job-4", tags={
        "mlflow.parentRunId": parent_id, "clipbench.sweep_id": parent_id, "clipbench.sweep_position": "4",
        "clipbench.error": FAILED_ERROR})
    client.log_param(failed.info.run_id, "model", "vit_h14")
    client.set_terminated(failed.info.run_id, status="FAILED")
    client.set_terminated(parent_id, status="FINISHED")

    return {"client": client, "parent_id": parent_id, "child_ids": child_ids, "failed_id": failed.info.run_id}


def _cli(*arguments: str, tracking_uri: str, tmp_path: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).parent / "clipbench"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "CLIPBENCH_OUTPUT_DIR": str(tmp_path / "outputs")}
    return subprocess.run([str(executable), "compare", *arguments], capture_output=True, text=True, env=env,
                          timeout=300)


def test_collect_runs_sweep_rows(sweep, tracking_uri):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    assert list(runs.columns) == RUN_COLUMNS
    assert list(runs["sweep_position"]) == [0, 1, 2, 3, 4]
    assert set(runs["run_id"]) == set(sweep["child_ids"]) | {sweep["failed_id"]}
    assert sweep["parent_id"] not in set(runs["run_id"])
    assert list(runs["status"]) == ["FINISHED"] * 4 + ["FAILED"]
    assert runs.loc[4, "error"] == FAILED_ERROR
    assert runs.loc[0, "error"] == ""


def test_collect_runs_metrics_match_store(sweep, tracking_uri):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"]).set_index("run_id")

    for run_id in sweep["child_ids"]:
        stored = sweep["client"].get_run(run_id).data
        for column in ["top1", "top5", "mean_per_class_recall", "load_time_s", "throughput_images_per_s",
                       "latency_ms_p50", "gflops_per_image"]:
            expected = stored.metrics.get(column, math.nan)
            actual = runs.loc[run_id, column]
            assert actual == expected or (math.isnan(actual) and math.isnan(expected)), (run_id, column)
        assert runs.loc[run_id, "model"] == stored.params["model"]
        assert runs.loc[run_id, "pretrained"] == stored.params["pretrained"]
        assert runs.loc[run_id, "params_millions"] == int(stored.params["param_count_total"]) / 1e6


def test_collect_runs_missing_metric_nan(sweep, tracking_uri):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    assert math.isnan(runs.loc[2, "top5"])
    assert math.isnan(runs.loc[0, "gflops_per_image"])
    assert math.isnan(runs.loc[4, "params_millions"])


def test_collect_runs_experiment_skips_parent(sweep, tracking_uri):
    runs = collect_runs(tracking_uri, experiment_name=EXPERIMENT)

    assert len(runs) == 6
    assert sweep["parent_id"] not in set(runs["run_id"])
    assert "x" in set(runs["model"])


def test_collect_runs_skips_running(sweep, tracking_uri):
    client = sweep["client"]
    client.create_run(client.get_run(sweep["parent_id"]).info.experiment_id,
                      tags={"mlflow.parentRunId": sweep["parent_id"], "clipbench.sweep_id": sweep["parent_id"]})

    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    assert len(runs) == 5


def test_collect_runs_unknown_experiment(tracking_uri):
    with pytest.raises(ConfigError, match="'no-such-experiment'"):
        collect_runs(tracking_uri, experiment_name="no-such-experiment")


def test_collect_runs_unknown_sweep(sweep, tracking_uri):
    with pytest.raises(ConfigError, match="0123456789abcdef"):
        collect_runs(tracking_uri, sweep_id="0123456789abcdef")


def test_collect_runs_not_sweep_parent(sweep, tracking_uri):
    with pytest.raises(ConfigError, match="not a sweep parent"):
        collect_runs(tracking_uri, sweep_id=sweep["child_ids"][0])


def test_collect_runs_needs_one_source(tracking_uri):
    with pytest.raises(ConfigError, match="exactly one"):
        collect_runs(tracking_uri)
    with pytest.raises(ConfigError, match="exactly one"):
        collect_runs(tracking_uri, experiment_name=EXPERIMENT, sweep_id="abc")


def test_comparison_table_ranks_top1(sweep, tracking_uri):
    table = comparison_table(collect_runs(tracking_uri, sweep_id=sweep["parent_id"]))

    assert list(table.columns) == ["rank", *COMPARISON_COLUMNS]
    assert list(table["model"]) == ["vit_l14", "vit_b16", "vit_b32", "rn50"]
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert "vit_h14" not in set(table["model"])


def test_comparison_table_ranks_latency_ascending(sweep, tracking_uri):
    table = comparison_table(collect_runs(tracking_uri, sweep_id=sweep["parent_id"]), rank_by="latency_ms_p50")

    assert list(table["model"]) == ["vit_b32", "vit_b16", "rn50", "vit_l14"]


def test_comparison_table_missing_values_last(sweep, tracking_uri):
    table = comparison_table(collect_runs(tracking_uri, sweep_id=sweep["parent_id"]), rank_by="gflops_per_image")

    assert list(table["model"]) == ["vit_b32", "vit_b16", "vit_l14", "rn50"]


def test_comparison_table_unknown_rank_by(sweep, tracking_uri):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    with pytest.raises(ConfigError, match="valid columns: top1"):
        comparison_table(runs, rank_by="accuracy")


def _points(rows: list[tuple[float, float]], x: str = "latency_ms_p50", y: str = "top1") -> pandas.DataFrame:
    return pandas.DataFrame({x: [row[0] for row in rows], y: [row[1] for row in rows]}, index=list("abcdefg")[:len(rows)])


def test_pareto_front_one_dominated():
    # c (latency 8 ms, top-1 0.6) is slower and less accurate than b (5 ms, 0.7).
    table = _points([(2.0, 0.5), (5.0, 0.7), (8.0, 0.6), (10.0, 0.8)])

    front = pareto_front(table)

    assert list(front) == [True, True, False, True]
    assert list(front.index) == list(table.index)


def test_pareto_front_throughput_higher_better():
    # For throughput, higher x is better, so a (100 images/s, 0.8) dominates b (50, 0.7).
    table = _points([(100.0, 0.8), (50.0, 0.7), (200.0, 0.6)], x="throughput_images_per_s")

    front = pareto_front(table, x="throughput_images_per_s")

    assert list(front) == [True, False, True]


def test_pareto_front_ties_and_nan():
    # a and b are identical, so neither dominates the other. c has no top-1 value.
    # a dominates d because it has the same latency and a higher top-1.
    table = _points([(3.0, 0.7), (3.0, 0.7), (1.0, math.nan), (3.0, 0.6)])

    front = pareto_front(table)

    assert list(front) == [True, True, False, False]


def test_pareto_front_unknown_axis():
    with pytest.raises(ConfigError, match="invalid x"):
        pareto_front(_points([(1.0, 0.5)]), x="latency")


def test_scatter_figure_labels(sweep, tracking_uri):
    table = comparison_table(collect_runs(tracking_uri, sweep_id=sweep["parent_id"]))

    figure = scatter_figure(table)
    axes = figure.axes[0]
    texts = {text.get_text() for text in axes.texts}

    assert isinstance(figure, Figure)
    assert axes.get_xlabel() == "Median latency (ms per image)"
    assert axes.get_ylabel() == "Top-1 accuracy (fraction)"
    assert "vit_b32/laion2b_s34b_b79k" in texts
    assert "rn50/openai" in texts
    assert len(axes.lines) == 1
    assert list(axes.lines[0].get_xdata()) == [3.0, 6.0, 20.0]
    assert axes.lines[0].get_marker() == "*"


def test_scatter_figure_empty_table():
    table = comparison_table(pandas.DataFrame(columns=RUN_COLUMNS))

    figure = scatter_figure(table)

    assert "no finished runs" in figure.axes[0].texts[0].get_text()


def test_write_report_files(sweep, tracking_uri, tmp_path):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    paths = write_report(runs, tmp_path / "report")

    assert [path.name for path in paths] == ["comparison.csv", "comparison.md", "accuracy_vs_latency.png"]
    assert all(path.is_file() for path in paths)
    assert paths[2].read_bytes()[:8] == PNG_SIGNATURE


def test_write_report_csv(sweep, tracking_uri, tmp_path):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    csv_path = write_report(runs, tmp_path / "report")[0]
    written = pandas.read_csv(csv_path)

    assert list(written.columns) == ["rank", *COMPARISON_COLUMNS]
    assert list(written["model"]) == ["vit_l14", "vit_b16", "vit_b32", "rn50"]
    assert list(written["top1"]) == [0.75, 0.70, 0.66, 0.55]
    assert written.loc[2, "params_millions"] == pytest.approx(151.277313)
    assert math.isnan(written.loc[1, "top5"])


def test_write_report_markdown(sweep, tracking_uri, tmp_path):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    markdown = write_report(runs, tmp_path / "report")[1].read_text()
    table_part, failed_part = markdown.split("## Failed runs")

    assert "| rank | model | pretrained | overrides | top1 |" in table_part
    assert "| 1 | vit_l14 | laion2b_s32b_b82k |  | 0.75 | 0.94 |" in table_part
    assert "| 4 | rn50 | openai |  | 0.55 |" in table_part
    assert "vit_h14" not in table_part
    assert "| sweep_position | model | error |" in failed_part
    assert "| 4 | vit_h14 | ModelLoadError: weights for vit_h14 \\| not found |" in failed_part


def test_markdown_table_cells():
    frame = pandas.DataFrame({"model": ["a|b"], "throughput_images_per_s": [12345.6], "top1": [0.123456],
                              "top5": [math.nan]})

    lines = markdown_table(frame).splitlines()

    assert lines[0] == "| model | throughput_images_per_s | top1 | top5 |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| a\\|b | 12346 | 0.1235 |  |"


def test_write_report_no_failed_section(sweep, tracking_uri, tmp_path):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])
    finished = runs[runs["status"] == "FINISHED"]

    markdown = write_report(finished, tmp_path / "report")[1].read_text()

    assert "Failed runs" not in markdown


def test_write_report_custom_axes_name(sweep, tracking_uri, tmp_path):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    paths = write_report(runs, tmp_path / "report", x="throughput_images_per_s", y="mean_per_class_recall")

    assert paths[2].name == "mean_per_class_recall_vs_throughput_images_per_s.png"


def test_write_report_bad_rank_writes_nothing(sweep, tracking_uri, tmp_path):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])

    with pytest.raises(ConfigError):
        write_report(runs, tmp_path / "report", rank_by="speed")
    assert not (tmp_path / "report").exists()


def test_log_report_artifacts(sweep, tracking_uri, tmp_path):
    runs = collect_runs(tracking_uri, sweep_id=sweep["parent_id"])
    paths = write_report(runs, tmp_path / "report")

    log_report(None, sweep["parent_id"], paths)
    listed = sweep["client"].list_artifacts(sweep["parent_id"], "comparison")

    assert sorted(item.path for item in listed) == [
        "comparison/accuracy_vs_latency.png", "comparison/comparison.csv", "comparison/comparison.md"]


def test_log_report_unknown_run(sweep, tracking_uri, tmp_path):
    paths = write_report(collect_runs(tracking_uri, sweep_id=sweep["parent_id"]), tmp_path / "report")

    with pytest.raises(ConfigError, match="not found"):
        log_report(tracking_uri, "0123456789abcdef", paths)


def test_log_report_missing_file(sweep, tracking_uri, tmp_path):
    with pytest.raises(FileNotFoundError):
        log_report(tracking_uri, sweep["parent_id"], [tmp_path / "absent.csv"])


def test_cli_sweep_prints_table(sweep, tracking_uri, tmp_path):
    result = _cli("--sweep", sweep["parent_id"], "--output", str(tmp_path / "cli"),
                  tracking_uri=tracking_uri, tmp_path=tmp_path)
    listed = sweep["client"].list_artifacts(sweep["parent_id"], "comparison")

    assert result.returncode == 0, result.stderr
    assert "| 1 | vit_l14 |" in result.stdout
    assert str(tmp_path / "cli" / "comparison.md") in result.stdout
    assert (tmp_path / "cli" / "accuracy_vs_latency.png").is_file()
    assert len(listed) == 3


def test_cli_experiment_default_output(sweep, tracking_uri, tmp_path):
    result = _cli("--experiment", EXPERIMENT, "--rank-by", "latency_ms_p50", tracking_uri=tracking_uri,
                  tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "| 1 | vit_b32 |" in result.stdout
    assert len(list((tmp_path / "outputs" / "compare").glob("*/*/comparison.csv"))) == 1


def test_cli_missing_sweep(sweep, tracking_uri, tmp_path):
    result = _cli("--sweep", "0123456789abcdef", tracking_uri=tracking_uri, tmp_path=tmp_path)

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "0123456789abcdef" in result.stderr


def test_cli_log_to_parent_needs_sweep(tracking_uri, tmp_path):
    result = _cli("--experiment", EXPERIMENT, "--log-to-parent", tracking_uri=tracking_uri, tmp_path=tmp_path)

    assert result.returncode == 2
    assert "--log-to-parent needs --sweep" in result.stderr


def test_cli_needs_source(tracking_uri, tmp_path):
    result = _cli(tracking_uri=tracking_uri, tmp_path=tmp_path)

    assert result.returncode == 2
