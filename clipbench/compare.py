"""Compare the evaluation runs of a sweep or an experiment, read back from MLflow.

``collect_runs`` reads one row per run and ``comparison_table`` ranks the finished runs.
``pareto_front`` marks the runs that no other run beats on both of two metrics, and
``scatter_figure`` plots one metric against another. ``write_report`` writes
``comparison.csv``, ``comparison.md`` and a PNG scatter plot, and ``log_report`` uploads
those files to the sweep's parent run. ``clipbench compare`` is the command-line front end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clipbench.errors import ConfigError
from clipbench.tracking import TrackingError, resolve_tracking_uri
from clipbench.sweep import OVERRIDES_TAG, REUSED_TAG_PREFIX, SWEEP_ID_TAG, SWEEP_PARENT_TAG, SWEEP_POSITION_TAG
from clipbench.tracking.runs import ERROR_TAG
from clipbench.tracking.store import redact_uri

logger = logging.getLogger(__name__)


COMPARISON_COLUMNS = ["model", "pretrained", "overrides", "top1", "top5", "mean_per_class_recall", "load_time_s",
                      "throughput_images_per_s", "latency_ms_p50", "params_millions", "gflops_per_image"]
RUN_COLUMNS = ["run_id", "status", "sweep_position", "error", *COMPARISON_COLUMNS]

# True where a higher value is better. Every numeric comparison column has an entry.
HIGHER_IS_BETTER: dict[str, bool] = {
    "top1": True,
    "top5": True,
    "mean_per_class_recall": True,
    "throughput_images_per_s": True,
    "load_time_s": False,
    "latency_ms_p50": False,
    "params_millions": False,
    "gflops_per_image": False,
}

AXIS_LABELS: dict[str, str] = {
    "top1": "Top-1 accuracy (fraction)",
    "top5": "Top-5 accuracy (fraction)",
    "mean_per_class_recall": "Mean per-class recall (fraction)",
    "throughput_images_per_s": "Throughput (images/s)",
    "load_time_s": "Load time (s)",
    "latency_ms_p50": "Median latency (ms per image)",
    "params_millions": "Parameters (millions)",
    "gflops_per_image": "GFLOPs per image",
}

DEFAULT_X = "latency_ms_p50"
DEFAULT_Y = "top1"
DEFAULT_FIGURE_NAME = "accuracy_vs_latency.png"

_FINISHED = RunStatus.to_string(RunStatus.FINISHED)
_FAILED = RunStatus.to_string(RunStatus.FAILED)
_METRIC_COLUMNS = [column for column in COMPARISON_COLUMNS if column in HIGHER_IS_BETTER]
_SEARCH_PAGE_SIZE = 1000


@contextmanager
def _store_errors(tracking_uri: str) -> Iterator[None]:
    """Re-raise a store failure as TrackingError naming the store."""
    try:
        yield
    except MlflowException as error:
        raise TrackingError(f"Reading MLflow store {redact_uri(tracking_uri)} failed: {error.message}") from error


def _is_not_found(error: MlflowException) -> bool:
    return error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """Return every active run of the experiment that matches the filter, page by page."""
    runs: list[Run] = []
    page_token = None

    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=_SEARCH_PAGE_SIZE, page_token=page_token)
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def _experiment_runs(client: MlflowClient, experiment_name: str) -> list[Run]:
    """Return the runs of an experiment except sweep parents. Raises ConfigError for an unknown name."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage != "active":
        raise ConfigError(f"MLflow experiment {experiment_name!r} not found. Check the name with `mlflow experiments search`.")

    runs = _search_all(client, experiment.experiment_id, "")
    return [run for run in runs if run.data.tags.get(SWEEP_PARENT_TAG) != "true"]


def _sweep_runs(client: MlflowClient, sweep_id: str) -> list[Run]:
    """Return the child runs of a sweep's parent run. Raises ConfigError for an unknown parent."""
    try:
        parent = client.get_run(sweep_id)
    except MlflowException as error:
        if _is_not_found(error):
            raise ConfigError(f"sweep parent run {sweep_id!r} not found. Pass the run id of the sweep's parent run.") from error
        raise

    # A job that failed before logging may lack one of the two tags, so children are
    # found by either and merged by run id.
    experiment_id = parent.info.experiment_id
    by_id: dict[str, Run] = {}
    for tag in (MLFLOW_PARENT_RUN_ID, SWEEP_ID_TAG):
        for run in _search_all(client, experiment_id, f"tags.`{tag}` = '{sweep_id}'"):
            by_id[run.info.run_id] = run

    # A resumed sweep skips jobs that a run outside the sweep already evaluated. The parent
    # names each such run in a tag "clipbench.reused.<position>", so the run takes that position here.
    for tag, run_id in parent.data.tags.items():
        if tag.startswith(REUSED_TAG_PREFIX) and run_id not in by_id:
            reused = client.get_run(run_id)
            reused.data.tags[SWEEP_POSITION_TAG] = tag.removeprefix(REUSED_TAG_PREFIX)
            by_id[run_id] = reused

    if not by_id and parent.data.tags.get(SWEEP_PARENT_TAG) != "true":
        raise ConfigError(f"run {sweep_id!r} is not a sweep parent: it has no {SWEEP_PARENT_TAG} tag and no child runs")

    return list(by_id.values())


def _latest_attempts(runs: list[Run]) -> list[Run]:
    """Keep one run per sweep position: a FINISHED run over a FAILED one, else the newest.

    A resumed sweep runs a failed job again, so its position can have several attempts.
    ``runs`` must be sorted by start time.
    """
    chosen: dict[str, Run] = {}
    for run in runs:
        position = run.data.tags.get(SWEEP_POSITION_TAG, run.info.run_id)
        earlier = chosen.get(position)
        if earlier is None or not (earlier.info.status == _FINISHED and run.info.status != _FINISHED):
            chosen[position] = run
    return sorted(chosen.values(), key=lambda run: run.info.start_time or 0)


def _float_or_nan(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _run_row(run: Run) -> dict[str, object]:
    """Return one row of ``RUN_COLUMNS`` for a run. Missing values become NaN or ''."""
    params = run.data.params
    metrics = run.data.metrics
    tags = run.data.tags

    position = tags.get(SWEEP_POSITION_TAG, "")
    row: dict[str, object] = {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "sweep_position": int(position) if position.strip().lstrip("-").isdigit() else None,
        "error": tags.get(ERROR_TAG, ""),
        "model": params.get("model", ""),
        "pretrained": params.get("pretrained", ""),
        "overrides": tags.get(OVERRIDES_TAG, ""),
    }

    for column in _METRIC_COLUMNS:
        row[column] = metrics.get(column, math.nan)
    row["params_millions"] = _float_or_nan(params.get("param_count_total")) / 1e6

    return row


def collect_runs(tracking_uri: str | None, experiment_name: str | None = None,
                 sweep_id: str | None = None) -> pandas.DataFrame:
    """Read the FINISHED and FAILED runs of an experiment or of one sweep as a DataFrame.

    Give exactly one of ``experiment_name`` and ``sweep_id`` (the parent run's id). Sweep
    parents are left out. Columns are ``RUN_COLUMNS``, rows are in sweep order, and missing
    metrics are NaN. Raises ConfigError for an unknown experiment or sweep and
    TrackingError when the store cannot be read.
    """
    if (experiment_name is None) == (sweep_id is None):
        raise ConfigError("give exactly one of experiment_name and sweep_id")

    resolved_uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(resolved_uri)
    with _store_errors(resolved_uri):
        if sweep_id is not None:
            runs = _sweep_runs(client, sweep_id)
        else:
            runs = _experiment_runs(client, experiment_name)

    ended_runs = [run for run in runs if run.info.status in (_FINISHED, _FAILED)]
    ended_runs.sort(key=lambda run: run.info.start_time or 0)
    if sweep_id is not None:
        ended_runs = _latest_attempts(ended_runs)
    logger.info("Read %d runs (%d skipped as running or killed) from %s", len(ended_runs),
                len(runs) - len(ended_runs), redact_uri(resolved_uri))

    frame = pandas.DataFrame([_run_row(run) for run in ended_runs], columns=RUN_COLUMNS)
    frame["sweep_position"] = frame["sweep_position"].astype("Int64")
    for column in _METRIC_COLUMNS:
        frame[column] = frame[column].astype(float)

    return frame.sort_values("sweep_position", kind="mergesort", na_position="last").reset_index(drop=True)


def _check_metric(name: str, role: str) -> None:
    if name not in HIGHER_IS_BETTER:
        raise ConfigError(f"invalid {role} {name!r}; valid columns: {', '.join(_METRIC_COLUMNS)}")


def comparison_table(runs: pandas.DataFrame, rank_by: str = "top1") -> pandas.DataFrame:
    """Rank the FINISHED runs by ``rank_by``, best first, with a 1-based 'rank' column first.

    Accuracy and throughput rank in descending order, latency, load time, parameters
    and GFLOPs in ascending order. Runs without a ``rank_by`` value come last and ties
    keep their input order. Raises ConfigError for a column not in ``HIGHER_IS_BETTER``.
    """
    _check_metric(rank_by, "rank_by")

    finished = runs.loc[runs["status"] == _FINISHED, COMPARISON_COLUMNS]
    ranked = finished.sort_values(rank_by, ascending=not HIGHER_IS_BETTER[rank_by], kind="mergesort",
                                  na_position="last").reset_index(drop=True)

    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked


def _dominates(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Return True when ``first`` is at least as good on both axes and better on one (larger is better)."""
    at_least_as_good = first[0] >= second[0] and first[1] >= second[1]
    return at_least_as_good and first != second


def pareto_front(table: pandas.DataFrame, x: str = DEFAULT_X, y: str = DEFAULT_Y) -> pandas.Series:
    """Return a boolean Series, aligned with ``table``, that is True for runs on the Pareto front.

    A run is on the front when no other run is at least as good on both ``x`` and ``y``
    and better on one, with each metric's direction taken from ``HIGHER_IS_BETTER``.
    Identical points do not dominate each other. A run missing ``x`` or ``y`` is never
    on the front and dominates nothing. Raises ConfigError for an unknown column.
    """
    _check_metric(x, "x")
    _check_metric(y, "y")

    # Flip the sign of lower-is-better metrics so that larger is better on both axes.
    x_sign = 1.0 if HIGHER_IS_BETTER[x] else -1.0
    y_sign = 1.0 if HIGHER_IS_BETTER[y] else -1.0
    points = {
        index: (x_sign * float(x_value), y_sign * float(y_value))
        for index, x_value, y_value in zip(table.index, table[x], table[y])
        if not (pandas.isna(x_value) or pandas.isna(y_value))
    }

    on_front = pandas.Series(False, index=table.index, dtype=bool)
    for index, point in points.items():
        on_front[index] = not any(_dominates(other, point) for other in points.values())

    return on_front


def _run_label(model: object, pretrained: object, overrides: object = "") -> str:
    """Label a point by its job's overrides when the sweep set any, else by model/pretrained."""
    if isinstance(overrides, str) and overrides.strip():
        return overrides
    if pandas.isna(pretrained) or str(pretrained) in ("", "None"):
        return str(model)
    return f"{model}/{pretrained}"


def scatter_figure(table: pandas.DataFrame, x: str = DEFAULT_X, y: str = DEFAULT_Y) -> Figure:
    """Plot ``y`` against ``x`` for the runs of a comparison table and mark the Pareto front.

    Each point is labelled with its job's overrides, or model/pretrained outside a sweep. The front is drawn as a line through its
    points, in x order, with star markers. Runs missing ``x`` or ``y`` are left out.
    """
    on_front = pareto_front(table, x, y)
    plotted = table[table[x].notna() & table[y].notna()]
    front = table[on_front].sort_values(x)

    figure = Figure(figsize=(7.0, 5.0), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(plotted[x], plotted[y], color="tab:blue", label="run", zorder=2)
    axes.plot(front[x], front[y], color="tab:red", marker="*", markersize=14, linestyle="-",
              label="Pareto front", zorder=3)

    labelled = zip(plotted["model"], plotted["pretrained"], plotted["overrides"], plotted[x], plotted[y])
    for model, pretrained, overrides, x_value, y_value in labelled:
        axes.annotate(_run_label(model, pretrained, overrides), (x_value, y_value), textcoords="offset points",
                      xytext=(5, 5), fontsize=8)

    if plotted.empty:
        axes.text(0.5, 0.5, f"no finished runs with {x} and {y}", ha="center", va="center",
                  transform=axes.transAxes)

    axes.set_xlabel(AXIS_LABELS[x])
    axes.set_ylabel(AXIS_LABELS[y])
    axes.set_title(f"{y} vs {x}")
    # Wider margins keep the point labels, drawn to the upper right of each point, inside the axes.
    axes.margins(x=0.2, y=0.1)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best")
    return figure


def _markdown_cell(value: object) -> str:
    """Format one table cell: floats to 4 significant digits, '' for missing, pipes escaped.

    Floats of 1000 and more are rounded to whole numbers instead, so they never show an exponent.
    """
    if value is None or value is pandas.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(frame: pandas.DataFrame) -> str:
    """Return a GitHub-flavoured Markdown table of the frame's columns and rows."""
    header = "| " + " | ".join(frame.columns) + " |"
    separator = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_markdown_cell(value) for value in row) + " |"
            for row in frame.itertuples(index=False, name=None)]
    return "\n".join([header, separator, *rows]) + "\n"


def _markdown_report(table: pandas.DataFrame, runs: pandas.DataFrame, rank_by: str) -> str:
    failed = runs.loc[runs["status"] == _FAILED, ["sweep_position", "model", "error"]]
    order = "descending" if HIGHER_IS_BETTER[rank_by] else "ascending"

    sections = [
        "# Model comparison\n",
        f"{len(table)} finished runs ranked by {rank_by} ({order}).\n",
        markdown_table(table),
    ]
    if not failed.empty:
        sections += ["## Failed runs\n", markdown_table(failed)]

    return "\n".join(sections)


def figure_name(x: str = DEFAULT_X, y: str = DEFAULT_Y) -> str:
    """Return the PNG file name for a scatter of ``y`` against ``x``."""
    if (x, y) == (DEFAULT_X, DEFAULT_Y):
        return DEFAULT_FIGURE_NAME
    return f"{y}_vs_{x}.png"


def write_report(runs: pandas.DataFrame, output_dir: Path, rank_by: str = "top1", x: str = DEFAULT_X,
                 y: str = DEFAULT_Y) -> list[Path]:
    """Write comparison.csv, comparison.md and the scatter PNG into ``output_dir``.

    ``runs`` is the output of ``collect_runs``. The Markdown file lists failed runs in a
    'Failed runs' section when there are any. Returns the three paths in that order.
    Raises ConfigError for an unknown ``rank_by``, ``x`` or ``y`` before writing anything.
    """
    table = comparison_table(runs, rank_by)
    figure = scatter_figure(table, x, y)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / "comparison.csv"
    markdown_path = output_dir / "comparison.md"
    figure_path = output_dir / figure_name(x, y)

    table.to_csv(csv_path, index=False)
    markdown_path.write_text(_markdown_report(table, runs, rank_by), encoding="utf-8")
    figure.savefig(figure_path, dpi=120)

    logger.info("Wrote the comparison of %d runs to %s", len(table), output_dir)
    return [csv_path, markdown_path, figure_path]


def log_report(tracking_uri: str | None, parent_run_id: str, paths: Sequence[Path]) -> None:
    """Upload the report files as artifacts of the parent run under ``comparison/``.

    Raises FileNotFoundError for a missing file and ConfigError for an unknown run, both
    before uploading, and TrackingError when the store fails.
    """
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"report file not found: {path}")

    resolved_uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(resolved_uri)
    with _store_errors(resolved_uri):
        try:
            client.get_run(parent_run_id)
        except MlflowException as error:
            if _is_not_found(error):
                raise ConfigError(f"parent run {parent_run_id!r} not found in {redact_uri(resolved_uri)}") from error
            raise

        for path in paths:
            client.log_artifact(parent_run_id, str(path), artifact_path="comparison")

    logger.info("Logged %d report files to run %s under comparison/", len(paths), parent_run_id)
