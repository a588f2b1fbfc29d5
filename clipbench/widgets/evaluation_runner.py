"""``EvaluationRunner``: configure and run one zero-shot evaluation, then show its metrics, charts and MLflow run."""

from __future__ import annotations

import html
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

import ipywidgets as widgets

from clipbench.config import compose_eval_config
from clipbench.errors import ClipbenchError
from clipbench.evaluation import EvaluationResult, default_run_dir, misclassified_samples, run_evaluation
from clipbench.images import ImageDecodeError, load_image
from clipbench.plots import figure_png, image_grid_figure, per_class_accuracy_figure
from clipbench.tracking.store import redact_uri
from clipbench.widgets.common import InputError, config_group_names, error_html, run_from_button, status_html
from clipbench.widgets.model_session import DEFAULT_MODEL_CONFIG, ModelSession

log = logging.getLogger(__name__)

DEFAULT_DATASET = "shapes"
DEFAULT_TEMPLATES = "openai"
MAX_MISCLASSIFIED = 12


def hydra_quote(value: str) -> str:
    """Quote a string as a Hydra override value, so spaces, commas and ``=`` stay literal.

    Hydra treats a backslash as an escape only before a quote or at the end of a quoted
    value, so only those backslashes are doubled.
    """
    escaped = re.sub(r"(\\*)('|$)", lambda match: match.group(1) * 2 + ("\\'" if match.group(2) else ""), value)
    return f"'{escaped}'"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


class EvaluationRunner:
    """Model config, data set, root folder, templates and limit per class; Run shows the results.

    ``extra_overrides`` are appended to the Hydra overrides of every run (for example
    ``runtime.num_workers=0``). With a ``session``, the model dropdown follows the session's
    model config and runs use its device and precision. Each run still loads its own copy
    of the model. Each run writes to a new folder under ``runs_dir``, by default
    ``outputs/notebook/<date>/<time>`` in the repository. ``last_result`` contains the last
    ``EvaluationResult`` and is None after an error.
    """

    def __init__(self, session: ModelSession | None = None, extra_overrides: Sequence[str] = (),
                 runs_dir: str | Path | None = None) -> None:
        self.session = session
        self.extra_overrides = list(extra_overrides)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else None
        self.last_result: EvaluationResult | None = None

        initial_model = session.config_name if session is not None and session.config_name else DEFAULT_MODEL_CONFIG
        self.model = widgets.Dropdown(options=config_group_names("model"), value=initial_model, description="Model")
        self.dataset = widgets.Dropdown(options=config_group_names("dataset"), value=DEFAULT_DATASET,
                                        description="Data set")
        self.root = widgets.Text(placeholder="folder, for imagefolder and imagenet_folder", description="Root")
        self.templates = widgets.Dropdown(options=config_group_names("prompts"), value=DEFAULT_TEMPLATES,
                                          description="Templates")
        self.limit_per_class = widgets.IntText(value=0, description="Per class", tooltip="images per class; 0: all")
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.message = widgets.HTML()
        self.status = widgets.HTML()
        self.progress = widgets.Output()
        self.metrics_table = widgets.HTML()
        self.per_class_chart = widgets.Image(format="png")
        self.misclassified_caption = widgets.HTML()
        self.misclassified_chart = widgets.Image(format="png")
        self.tracking = widgets.HTML()

        self.run_button.on_click(lambda button: run_from_button(self.run, self.message, "Evaluation"))
        if session is not None:
            session.add_observer(lambda manager: self._follow_session())

        inputs = widgets.VBox([
            widgets.HBox([self.model, self.templates]),
            widgets.HBox([self.dataset, self.root]),
            widgets.HBox([self.limit_per_class, self.run_button]),
            self.message, self.status, self.progress,
        ])
        results = widgets.VBox([self.metrics_table, self.tracking, self.per_class_chart,
                                self.misclassified_caption, self.misclassified_chart])
        self.widget = widgets.VBox([inputs, results])

    def _follow_session(self) -> None:
        if self.session.config_name in self.model.options:
            self.model.value = self.session.config_name

    def overrides(self) -> list[str]:
        """Return the Hydra overrides for the current inputs; raise InputError for an invalid one."""
        overrides = [f"model={self.model.value}", f"dataset={self.dataset.value}", f"prompts={self.templates.value}"]

        root = self.root.value.strip()
        if "${" in root:
            # NOTE: validate_config resolves the configuration twice (OmegaConf.resolve, then
            # to_object), so even an escaped "\${" becomes an interpolation. Such folders are rejected.
            raise InputError(f"Root {root!r} contains '${{', which the configuration reads as an interpolation: "
                             "rename or link the folder.")
        if root:
            overrides.append(f"dataset.root={hydra_quote(root)}")

        limit = self.limit_per_class.value
        if limit < 0:
            raise InputError(f"Images per class must be 0 (all images) or a positive number, got {limit}.")
        if limit > 0:
            overrides.append(f"dataset.limit_per_class={limit}")

        if self.session is not None:
            overrides += [f"runtime.device={self.session.device}", f"runtime.precision={self.session.precision}"]
        return overrides + self.extra_overrides

    def run(self) -> EvaluationResult | None:
        """Run the evaluation synchronously and show its results; return them, or None after showing the error."""
        self._clear_outputs()
        self.status.value = status_html("Running… loading the data set and the model; progress bars appear below.")
        self.run_button.disabled = True
        started = time.perf_counter()
        try:
            cfg = compose_eval_config(self.overrides())
            with self.progress:
                result = run_evaluation(cfg, self._new_run_dir())
        except ClipbenchError as err:
            self.message.value = error_html(str(err))
            self.status.value = ""
            return None
        finally:
            self.run_button.disabled = False

        self._show_metrics(result)
        self._show_tracking(result)
        self._show_per_class(result)
        self._show_misclassified(result, cfg.runtime.max_image_pixels)
        self.last_result = result
        self.status.value = status_html(f"Finished in {time.perf_counter() - started:.1f} s.")
        return result

    def _new_run_dir(self) -> Path:
        if self.runs_dir is None:
            return default_run_dir("notebook")
        return self.runs_dir / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")

    def _clear_outputs(self) -> None:
        self.last_result = None
        self.message.value = ""
        self.progress.clear_output()
        self.metrics_table.value = ""
        self.tracking.value = ""
        self.per_class_chart.value = b""
        self.misclassified_caption.value = ""
        self.misclassified_chart.value = b""

    def _show_metrics(self, result: EvaluationResult) -> None:
        metrics = result.metrics
        throughput = metrics["throughput_images_per_s"]
        rows = [
            ("top-1", percent(metrics["top1"])),
            ("top-5", percent(metrics["top5"])),
            ("mean per-class recall", percent(metrics["mean_per_class_recall"])),
            ("images", f"{int(metrics['num_images'])}"),
            ("skipped images", f"{int(metrics['skipped_images'])}"),
            ("throughput", "n/a" if throughput is None else f"{throughput:.1f} images/s"),
            ("results folder", str(result.run_dir)),
        ]
        cells = "".join(f"<tr><td>{name}</td><td>{html.escape(value)}</td></tr>" for name, value in rows)
        self.metrics_table.value = f"<table>{cells}</table>"

    def _show_tracking(self, result: EvaluationResult) -> None:
        uri = html.escape(redact_uri(result.tracking_uri)) if result.tracking_uri else ""
        if result.mlflow_run_id:
            self.tracking.value = f"MLflow run <code>{html.escape(result.mlflow_run_id)}</code> in <code>{uri}</code>"
        elif result.tracking_error:
            self.tracking.value = error_html(result.tracking_error)
        else:
            self.tracking.value = status_html("MLflow tracking is off (tracking=none).")

    def _show_per_class(self, result: EvaluationResult) -> None:
        classnames = result.images.classes.classnames
        recall = result.report.per_class_recall
        labels = sorted(recall)
        figure = per_class_accuracy_figure([classnames[label] for label in labels], [recall[label] for label in labels])
        self.per_class_chart.value = figure_png(figure)

    def _show_misclassified(self, result: EvaluationResult, max_image_pixels: int | None) -> None:
        classnames = result.images.classes.classnames
        images, captions = [], []
        for index, target, predicted, probability in misclassified_samples(result, MAX_MISCLASSIFIED):
            sample_id = result.images.samples[index].sample_id
            try:
                images.append(load_image(result.images.image_bytes(index), name=sample_id, max_pixels=max_image_pixels))
            except (ImageDecodeError, OSError) as err:
                log.warning("Failed to decode misclassified image %s for display: %s", sample_id, err)
                continue
            captions.append(f"true: {classnames[target]}\npredicted: {classnames[predicted]} ({probability:.0%})")

        if not images:
            self.misclassified_caption.value = status_html("No misclassified images to show.")
            return
        self.misclassified_caption.value = f"<b>Misclassified images</b> (first {len(images)}, true and predicted class)"
        self.misclassified_chart.value = figure_png(image_grid_figure(images, captions))
