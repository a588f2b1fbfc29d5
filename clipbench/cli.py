"""The ``clipbench`` command line: ``eval`` (Hydra), ``compare`` and ``shapes``.

Configuration mistakes end with one line on stderr and exit status 2; input and loading
errors (missing data folder, unavailable weights) end with one line and status 1. Add
``-v`` (or ``verbose=true``) for the full traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from clipbench.config import CONF_DIR, compose_eval_config, register_resolvers, validate_config
from clipbench.errors import ClipbenchError, ConfigError

log = logging.getLogger("clipbench")

USAGE = """usage: clipbench COMMAND [OVERRIDES...]

commands:
  eval      zero-shot evaluation of one model on one data set (Hydra; -m for a sweep)
  shapes    write the generated shapes data set as an ImageNet-layout folder:
            clipbench shapes OUTPUT_DIR [--images-per-class N] [--seed S]
  compare   rank the runs of a sweep or experiment from MLflow (clipbench compare --help)

examples:
  clipbench eval
  clipbench eval model=vit_b32_laion2b dataset=imagenet_folder dataset.root=/data/imagenet/val
  clipbench eval --cfg job            print the composed configuration
  clipbench eval -v ...               full tracebacks on errors
"""
_HYDRA_INFO_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve", "--package", "-p"}
_MULTIRUN_FLAGS = {"-m", "--multirun"}


def _fail(command: str, message: str, status: int) -> int:
    sys.stderr.write(f"clipbench {command}: error: {message}\n")
    return status


def _sweep_free(overrides: Sequence[str]) -> list[list[str]]:
    """Expand sweep overrides (``a=x,y``) into every combination of plain overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    combinations: list[list[str]] = [[]]
    for override in parsed:
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        key = override.get_key_element()
        combinations = [combo + [f"{key}={value}"] for combo in combinations for value in values]
    return combinations


def check_overrides(overrides: Sequence[str]) -> None:
    """Compose and validate the configuration for every job the overrides describe.

    Raises ConfigError with a one-line message, so a sweep with one misspelt model name
    fails before any job starts.
    """
    from hydra.errors import HydraException

    user_overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        jobs = _sweep_free(user_overrides)
    except HydraException as err:
        raise ConfigError(f"invalid override syntax: {str(err).splitlines()[0]}") from err

    for job_overrides in jobs:
        compose_eval_config(job_overrides)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def eval_job(cfg: DictConfig) -> float | None:
    """One Hydra job: validate the configuration, evaluate, and return top-1 (for sweepers)."""
    from hydra.types import RunMode

    from clipbench.evaluation import run_evaluation
    from clipbench.sweep import FINGERPRINT_TAG, config_fingerprint, read_sweep_info, run_sweep_job

    typed = validate_config(cfg)
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    sweep = read_sweep_info(hydra_config.sweep.dir) if hydra_config.mode == RunMode.MULTIRUN else None
    if sweep is not None:
        result = run_sweep_job(typed, run_dir, sweep, hydra_config.job.num, sweep.job_label(list(hydra_config.overrides.task)))
        return None if result is None else result.report.top1

    try:
        result = run_evaluation(typed, run_dir, extra_tags={FINGERPRINT_TAG: config_fingerprint(typed)})
    except ClipbenchError as err:
        if typed.verbose:
            raise
        log.error("%s (run with -v for the full traceback)", err)
        sys.exit(2 if isinstance(err, ConfigError) else 1)

    if result.mlflow_run_id:
        log.info("MLflow run %s in %s (open with: mlflow ui --backend-store-uri %s)",
                 result.mlflow_run_id, result.tracking_uri, result.tracking_uri)
    if result.tracking_error:
        sys.exit(1)
    return result.report.top1


# Launcher presets in conf/hydra/launcher/ whose plugin is an optional extra.
_LAUNCHER_PLUGINS = {
    "slurm": ("hydra_plugins.hydra_submitit_launcher", 'pip install -e ".[slurm]"'),
    "ray": ("hydra_plugins.hydra_ray_launcher", 'pip install -e ".[ray]"'),
}


def _missing_launcher_plugin(arguments: Sequence[str]) -> str | None:
    """Return an error message when a sweep selects a launcher preset whose plugin is not installed."""
    import importlib.util

    if not any(a in _MULTIRUN_FLAGS for a in arguments):
        return None
    for argument in arguments:
        key, _, value = argument.partition("=")
        if key == "hydra/launcher" and value in _LAUNCHER_PLUGINS:
            module, install = _LAUNCHER_PLUGINS[value]
            if importlib.util.find_spec(module) is None:
                return f"hydra/launcher={value} needs the plugin {module.split('.')[-1]}: {install}"
    return None


def run_eval_command(arguments: Sequence[str]) -> int:
    arguments = list(arguments)
    verbose = any(a in ("-v", "--verbose") for a in arguments) or os.environ.get("HYDRA_FULL_ERROR") == "1"
    arguments = [a for a in arguments if a not in ("-v", "--verbose")]
    if verbose:
        arguments.append("verbose=true")
        os.environ["HYDRA_FULL_ERROR"] = "1"

    missing_plugin = _missing_launcher_plugin(arguments)
    if missing_plugin:
        return _fail("eval", missing_plugin, 2)

    if not any(a.split("=")[0] in _HYDRA_INFO_FLAGS for a in arguments):
        overrides = [a for a in arguments if a not in _MULTIRUN_FLAGS and not a.startswith("-")]
        try:
            check_overrides(overrides)
        except ConfigError as err:
            if verbose:
                raise
            return _fail("eval", str(err), 2)

    sys.argv = [sys.argv[0]] + arguments
    eval_job()
    return 0


def run_shapes_command(arguments: Sequence[str]) -> int:
    import argparse

    from clipbench.data.shapes import ShapesDataset

    parser = argparse.ArgumentParser(prog="clipbench shapes",
                                     description="Write generated shapes as OUTPUT_DIR/<class id>/*.JPEG plus class_index.json.")
    parser.add_argument("output_dir", type=Path, help="folder to create (it may exist; files are overwritten)")
    parser.add_argument("--images-per-class", type=int, default=10, help="images per class, 24 classes (default: 10)")
    parser.add_argument("--seed", type=int, default=2, help="generator seed; the offline model trained on seed 1 (default: 2)")
    args = parser.parse_args(list(arguments))
    if args.images_per_class < 1:
        return _fail("shapes", f"--images-per-class must be at least 1, got {args.images_per_class}", 2)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        root = ShapesDataset(images_per_class=args.images_per_class, seed=args.seed).write_imagenet_folder(args.output_dir)
    except OSError as err:
        return _fail("shapes", f"cannot write to {args.output_dir}: {err.strerror or err}", 1)
    sys.stdout.write(
        "Evaluate them with:\n"
        f"  clipbench eval dataset=imagenet_folder dataset.root={root} dataset.class_index={root / 'class_index.json'}\n"
    )
    return 0


def run_compare_command(arguments: Sequence[str]) -> int:
    import argparse

    from clipbench.compare import (
        DEFAULT_X,
        DEFAULT_Y,
        HIGHER_IS_BETTER,
        collect_runs,
        comparison_table,
        log_report,
        markdown_table,
        write_report,
    )
    from clipbench.evaluation import default_run_dir

    metric_names = ", ".join(HIGHER_IS_BETTER)
    parser = argparse.ArgumentParser(prog="clipbench compare",
                                     description="Rank the evaluation runs of a sweep or an experiment and write "
                                                 "comparison.csv, comparison.md and a scatter plot.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="MLflow experiment name: compare all its runs")
    source.add_argument("--sweep", metavar="RUN_ID", help="run id of a sweep's parent run: compare its child runs")
    parser.add_argument("--rank-by", default="top1", help=f"column to rank by (default: top1); one of {metric_names}")
    parser.add_argument("--x", default=DEFAULT_X, help=f"x axis of the scatter plot (default: {DEFAULT_X})")
    parser.add_argument("--y", default=DEFAULT_Y, help=f"y axis of the scatter plot (default: {DEFAULT_Y})")
    parser.add_argument("--output", type=Path, default=None,
                        help="folder for the report files (default: a new outputs/compare/<date>/<time> folder)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db in the repository)")
    parser.add_argument("--log-to-parent", action=argparse.BooleanOptionalAction, default=None,
                        help="upload the report to the sweep's parent run under comparison/ (default: on with --sweep)")
    args = parser.parse_args(list(arguments))

    log_to_parent = args.sweep is not None if args.log_to_parent is None else args.log_to_parent
    if log_to_parent and args.sweep is None:
        return _fail("compare", "--log-to-parent needs --sweep RUN_ID, because an experiment has no parent run", 2)

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    output_dir = args.output if args.output is not None else default_run_dir("compare")
    try:
        runs = collect_runs(args.tracking_uri, experiment_name=args.experiment, sweep_id=args.sweep)
        paths = write_report(runs, output_dir, rank_by=args.rank_by, x=args.x, y=args.y)
        if log_to_parent:
            log_report(args.tracking_uri, args.sweep, paths)
    except ConfigError as err:
        return _fail("compare", str(err), 2)
    except ClipbenchError as err:
        return _fail("compare", str(err), 1)
    except OSError as err:
        return _fail("compare", f"cannot write the report to {output_dir}: {err.strerror or err}", 1)

    sys.stdout.write(markdown_table(comparison_table(runs, args.rank_by)))
    sys.stdout.write("\nWrote:\n" + "".join(f"  {path}\n" for path in paths))
    if log_to_parent:
        sys.stdout.write(f"Logged the report to run {args.sweep} under comparison/\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    register_resolvers()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2

    command, arguments = argv[0], argv[1:]
    if command == "eval":
        return run_eval_command(arguments)
    if command == "shapes":
        return run_shapes_command(arguments)
    if command == "compare":
        return run_compare_command(arguments)
    return _fail(command, f"unknown command {command!r}; run `clipbench --help` for the commands", 2)


if __name__ == "__main__":
    sys.exit(main())
