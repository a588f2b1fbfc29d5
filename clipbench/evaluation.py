"""One zero-shot evaluation, from configuration to files in the run directory and an MLflow run.

Steps: open the data set, load the model, build the classifier, run batched inference,
compute metrics, time the single-image request path, write the results, then log them to
MLflow. Results are on disk before MLflow is called, so a tracking failure loses nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from omegaconf import OmegaConf

from clipbench import results
from clipbench.complexity import model_complexity
from clipbench.config import EvalConfig
from clipbench.data import LabeledImages, build_dataset
from clipbench.feature_cache import default_cache_dir
from clipbench.inference import InferenceOutput, run_inference
from clipbench.loading import LoadedModel, ModelSpec, load_model
from clipbench.manager import CLIPModelManager
from clipbench.metrics import ClassificationReport, classification_report
from clipbench.prompts import PromptSet, load_prompt_set
from clipbench.timing import percentile_ms, synchronize, timed
from clipbench.zero_shot import build_classifier

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Everything one evaluation produced; ``tracking_error`` is set when MLflow logging failed."""

    metrics: dict[str, float | None]
    params: dict[str, Any]
    tags: dict[str, str]
    report: ClassificationReport
    inference: InferenceOutput
    images: LabeledImages
    run_dir: Path
    artifact_paths: list[Path] = field(default_factory=list)
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    tracking_uri: str | None = None
    tracking_error: str | None = None


def model_spec(cfg: EvalConfig) -> ModelSpec:
    return ModelSpec(
        model_name=cfg.model.name, pretrained=cfg.model.pretrained, checkpoint_path=cfg.model.checkpoint,
        device=cfg.runtime.device, precision=cfg.runtime.precision.value, quick_gelu=cfg.model.quick_gelu,
        cache_dir=cfg.model.cache_dir,
    )


def prompt_set(cfg: EvalConfig) -> PromptSet:
    return load_prompt_set(cfg.prompts.name, templates=cfg.prompts.templates, path=cfg.prompts.file)


def dataset_config(cfg: EvalConfig) -> dict[str, Any]:
    values = dataclasses.asdict(cfg.dataset)
    values["class_scope"] = cfg.dataset.class_scope.value
    return values


def feature_cache_dir(cfg: EvalConfig) -> Path | None:
    if not cfg.runtime.feature_cache:
        return None
    return Path(cfg.runtime.cache_dir).expanduser() if cfg.runtime.cache_dir else default_cache_dir()


def measure_request_latency_ms(loaded: LoadedModel, images: LabeledImages, classifier: torch.Tensor,
                               prompts: PromptSet, requests: int, max_image_pixels: int | None) -> list[float]:
    """Time ``CLIPModelManager.classify_image_with_labels`` on the first images (bytes in, top-5 out).

    Two untimed requests warm the path up first. Images that fail to decode are not timed.
    """
    manager = CLIPModelManager.from_loaded(loaded, images.classes, prompts, classifier, max_image_pixels=max_image_pixels)
    payloads = []
    for index in range(min(requests + 2, len(images))):
        try:
            payloads.append(images.image_bytes(index))
        except OSError:
            continue

    latencies_ms = []
    for number, payload in enumerate(payloads):
        synchronize(loaded.device)
        started = time.perf_counter()
        try:
            manager.classify_image_with_labels(payload, None, top_k=5)
        except ValueError:
            continue
        synchronize(loaded.device)
        if number >= 2:
            latencies_ms.append((time.perf_counter() - started) * 1000)
    return latencies_ms


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def collect_metrics(report: ClassificationReport, inference: InferenceOutput, loaded: LoadedModel,
                    classifier_build_s: float, latencies_ms: list[float]) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {
        "top1": report.top1,
        "top5": report.top5,
        "mean_per_class_recall": report.mean_per_class_recall,
        "load_time_s": loaded.load_time_s,
        "classifier_build_s": classifier_build_s,
        "throughput_images_per_s": inference.throughput_images_per_s,
        "latency_ms_p50": percentile_ms(latencies_ms, 50),
        "latency_ms_p95": percentile_ms(latencies_ms, 95),
        "batch_latency_ms_p50": percentile_ms(inference.batch_latencies_ms, 50),
        "batch_latency_ms_p95": percentile_ms(inference.batch_latencies_ms, 95),
        "skipped_images": float(len(inference.skipped)),
        "num_images": float(report.num_images),
    }
    for phase, seconds in loaded.load_phases_s.items():
        metrics[f"load_{phase}"] = seconds
    return metrics


def collect_params(cfg: EvalConfig, loaded: LoadedModel, images: LabeledImages, prompts: PromptSet,
                   inference: InferenceOutput) -> dict[str, Any]:
    return {
        "model": cfg.model.name,
        "pretrained": cfg.model.pretrained,
        "checkpoint": cfg.model.checkpoint,
        "checkpoint_sha256": loaded.weights_sha256,
        "dataset": images.name,
        "dataset_size": len(images),
        "num_classes": len(images.classes),
        "class_scope": images.info.get("class_scope"),
        "limit_per_class": cfg.dataset.limit_per_class,
        "limit_total": cfg.dataset.limit_total,
        "templates": prompts.name,
        "templates_count": len(prompts.templates),
        "batch_size": cfg.runtime.batch_size,
        "precision": cfg.runtime.precision.value,
        "device": str(loaded.device),
        "on_bad_image": cfg.runtime.on_bad_image.value,
        "param_count_total": loaded.parameter_counts["total"],
        "param_count_image": loaded.parameter_counts["image"],
        "param_count_text": loaded.parameter_counts["text"],
        "torch_version": torch.__version__,
        "open_clip_version": open_clip.__version__,
    }


def write_results(run_dir: Path, cfg: EvalConfig, result: EvaluationResult) -> list[Path]:
    """Write every result file into ``run_dir`` and return their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    classes = result.images.classes
    config_path = run_dir / "resolved_config.yaml"
    config_path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return [
        config_path,
        results.write_json(run_dir / "metrics.json", result.metrics),
        results.write_json(run_dir / "params.json", result.params),
        results.write_per_class(run_dir / "per_class.csv", result.report, classes),
        results.write_confusions(run_dir / "confusions.csv", result.report, classes),
        results.write_predictions(run_dir / "predictions.csv", result.inference.sample_ids,
                                  result.inference.logits, result.inference.targets),
        results.write_skipped(run_dir / "skipped_images.csv", result.inference.skipped),
    ]


def log_to_mlflow(cfg: EvalConfig, result: EvaluationResult, parent_run_id: str | None = None) -> None:
    """Log the written results to MLflow; on failure record the error and keep the files."""
    from clipbench.tracking import TrackingError, git_commit, log_evaluation_run, resolve_tracking_uri

    result.tags.setdefault("git_commit", git_commit() or "unknown")
    try:
        tracking = log_evaluation_run(
            tracking_uri=cfg.tracking.uri, experiment_name=cfg.tracking.experiment,
            run_name=cfg.tracking.run_name or f"{cfg.model.name}-{result.images.name}",
            params=result.params, metrics=result.metrics, tags=result.tags, artifact_paths=result.artifact_paths,
            parent_run_id=parent_run_id,
        )
    except TrackingError as err:
        result.tracking_error = str(err)
        result.tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
        log.error("MLflow logging failed; the results are in %s: %s", result.run_dir, err)
        return
    result.mlflow_run_id = tracking.run_id
    result.mlflow_experiment_id = tracking.experiment_id
    result.tracking_uri = tracking.tracking_uri


def default_run_dir(kind: str = "notebook") -> Path:
    """Return a new ``<outputs>/<kind>/<date>/<time>`` folder path.

    ``<outputs>`` is ``$CLIPBENCH_OUTPUT_DIR`` when set, else ``outputs/`` in the repository root.
    """
    from clipbench.tracking import repository_root

    base = Path(os.environ["CLIPBENCH_OUTPUT_DIR"]) if os.environ.get("CLIPBENCH_OUTPUT_DIR") else repository_root() / "outputs"
    now = datetime.now()
    return base / kind / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")


def misclassified_samples(result: EvaluationResult, max_samples: int = 12) -> list[tuple[int, int, int, float]]:
    """Return up to ``max_samples`` wrong predictions as (data set index, target, predicted, probability)."""
    index_of = {sample.sample_id: i for i, sample in enumerate(result.images.samples)}
    probabilities = result.inference.logits.softmax(dim=1)
    predicted = probabilities.argmax(dim=1)
    wrong = (predicted != result.inference.targets).nonzero().flatten().tolist()
    return [
        (index_of[result.inference.sample_ids[row]], int(result.inference.targets[row]), int(predicted[row]),
         float(probabilities[row, predicted[row]]))
        for row in wrong[:max_samples]
    ]


def run_evaluation(cfg: EvalConfig, run_dir: str | Path | None = None, parent_run_id: str | None = None,
                   extra_tags: dict[str, str] | None = None) -> EvaluationResult:
    """Run one configured zero-shot evaluation end to end and return its results.

    ``run_dir`` receives the result files; by default a new folder under ``outputs/notebook``.
    ``parent_run_id`` nests the MLflow run under a sweep's parent run; ``extra_tags`` are
    added to the run's tags.
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    images = build_dataset(dataset_config(cfg))
    prompts = prompt_set(cfg)
    loaded = load_model(model_spec(cfg))

    build_timings: dict[str, float] = {}
    with timed(build_timings, "classifier_build_s", loaded.device):
        classifier = build_classifier(loaded, images.classes.classnames, prompts,
                                      cache_dir=feature_cache_dir(cfg), show_progress=cfg.runtime.progress)

    inference = run_inference(
        loaded, images, classifier, batch_size=cfg.runtime.batch_size, num_workers=cfg.runtime.num_workers,
        on_bad_image=cfg.runtime.on_bad_image.value, warmup_batches=cfg.runtime.warmup_batches,
        max_image_pixels=cfg.runtime.max_image_pixels, show_progress=cfg.runtime.progress,
    )
    report = classification_report(inference.logits, inference.targets, cfg.runtime.num_confusions)
    latencies_ms = measure_request_latency_ms(loaded, images, classifier, prompts, cfg.runtime.latency_requests,
                                              cfg.runtime.max_image_pixels)

    complexity = model_complexity(loaded, feature_cache_dir(cfg))
    result = EvaluationResult(
        metrics={**collect_metrics(report, inference, loaded, build_timings["classifier_build_s"], latencies_ms),
                 **complexity.as_metrics()},
        params=collect_params(cfg, loaded, images, prompts, inference),
        tags={"device_name": device_name(loaded.device), **(extra_tags or {})},
        report=report, inference=inference, images=images, run_dir=run_dir,
    )
    result.artifact_paths = write_results(run_dir, cfg, result)
    log.info(
        "%s on %s: top1=%.4f top5=%s mean_per_class_recall=%.4f (%d images, %d skipped); results in %s",
        cfg.model.name, images.name, report.top1, "n/a" if report.top5 is None else f"{report.top5:.4f}",
        report.mean_per_class_recall, report.num_images, len(inference.skipped), run_dir,
    )

    if cfg.tracking.enabled:
        log_to_mlflow(cfg, result, parent_run_id)
    return result
