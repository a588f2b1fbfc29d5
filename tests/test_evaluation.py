"""End-to-end evaluation through the library: metrics, equivalence with OpenCLIP, result files, MLflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import open_clip
import pytest
import torch
from mlflow import MlflowClient
from open_clip import OPENAI_IMAGENET_TEMPLATES

from clipbench.config import validate_config
from clipbench.data.shapes import ShapesDataset
from clipbench.evaluation import run_evaluation
from clipbench.offline_model import OFFLINE_MODEL_NAME, register_offline_model_config
from conftest import ACCEPTED_CASES, REJECTED_CASES, copy_cases

FAST = ["runtime.num_workers=0", "runtime.progress=false", "runtime.latency_requests=3"]


def eval_config(compose_config, *overrides: str):
    return validate_config(compose_config([*FAST, *overrides]))


def reference_top1_top5(checkpoint: Path, images_per_class: int, seed: int) -> tuple[float, float]:
    """A plain loop with OpenCLIP's own loader and classifier builder, independent of clipbench's code."""
    register_offline_model_config()
    model, _, preprocess = open_clip.create_model_and_transforms(OFFLINE_MODEL_NAME, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(OFFLINE_MODEL_NAME)
    shapes = ShapesDataset(images_per_class=images_per_class, seed=seed)
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, shapes.classnames, OPENAI_IMAGENET_TEMPLATES)
        top1 = top5 = 0
        for index in range(len(shapes)):
            image, label, _ = shapes[index]
            features = model.encode_image(preprocess(image).unsqueeze(0), normalize=True)
            ranked = (features @ classifier)[0].topk(5).indices.tolist()
            top1 += int(ranked[0] == label)
            top5 += int(label in ranked)
    return top1 / len(shapes), top5 / len(shapes)


def test_matches_openclip_reference(compose_config, tmp_path, offline_checkpoint):
    cfg = eval_config(compose_config, "dataset.images_per_class=6", "dataset.seed=7", "tracking=none")
    result = run_evaluation(cfg, tmp_path / "run")
    reference_top1, reference_top5 = reference_top1_top5(offline_checkpoint, 6, 7)
    assert result.metrics["top1"] == pytest.approx(reference_top1, abs=1e-9)
    assert result.metrics["top5"] == pytest.approx(reference_top5, abs=1e-9)


def test_offline_model_accuracy_bar(compose_config, tmp_path):
    cfg = eval_config(compose_config, "dataset.images_per_class=20", "dataset.seed=3", "tracking=none")
    result = run_evaluation(cfg, tmp_path / "run")
    assert result.report.num_classes == 24
    assert result.report.num_images == 480
    assert result.metrics["top1"] >= 0.90


def test_result_files_written(compose_config, tmp_path):
    cfg = eval_config(compose_config, "dataset.images_per_class=2", "tracking=none")
    run_dir = tmp_path / "run"
    result = run_evaluation(cfg, run_dir)
    names = {path.name for path in result.artifact_paths}
    assert names == {"resolved_config.yaml", "metrics.json", "params.json", "per_class.csv", "confusions.csv",
                     "predictions.csv", "skipped_images.csv"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(result.report.top1)
    with (run_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 48
    assert {"sample_id", "target", "top1_index", "top5_index", "top5_score"} <= set(rows[0])
    with (run_dir / "per_class.csv").open() as handle:
        per_class = list(csv.DictReader(handle))
    assert len(per_class) == 24
    assert result.mlflow_run_id is None


def test_timings_are_reported(compose_config, tmp_path):
    cfg = eval_config(compose_config, "dataset.images_per_class=4", "runtime.batch_size=16", "tracking=none")
    metrics = run_evaluation(cfg, tmp_path / "run").metrics
    for key in ("load_time_s", "classifier_build_s", "throughput_images_per_s", "latency_ms_p50", "latency_ms_p95",
                "load_build_s", "load_load_weights_s", "load_to_device_s", "batch_latency_ms_p50"):
        assert metrics[key] is not None and metrics[key] >= 0, key
    assert metrics["latency_ms_p95"] >= metrics["latency_ms_p50"]
    assert metrics["throughput_images_per_s"] > 0


def test_top5_absent_below_five_classes(compose_config, tmp_path):
    from clipbench.data.shapes import ShapesDataset as Shapes

    root = Shapes(images_per_class=2, seed=4).write_imagenet_folder(tmp_path / "shapes")
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[3:]:
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    cfg = eval_config(compose_config, "dataset=imagenet_folder", f"dataset.root={root}",
                      f"dataset.class_index={root / 'class_index.json'}", "dataset.class_scope=subset", "tracking=none")
    result = run_evaluation(cfg, tmp_path / "run")
    assert result.report.num_classes == 3
    assert result.metrics["top5"] is None
    assert result.params["class_scope"] == "subset"


def test_mlflow_run_read_back(compose_config, tmp_path, tracking_uri):
    cfg = eval_config(compose_config, "dataset.images_per_class=2", "tracking.experiment=readback")
    result = run_evaluation(cfg, tmp_path / "run")
    assert result.tracking_error is None
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    for key in ("model", "pretrained", "checkpoint_sha256", "dataset", "dataset_size", "templates", "templates_count",
                "batch_size", "precision", "device", "torch_version", "open_clip_version"):
        assert key in run.data.params, key
    assert run.data.params["model"] == "clipbench-tiny"
    assert run.data.params["templates_count"] == "80"
    for key in ("top1", "top5", "mean_per_class_recall", "load_time_s", "classifier_build_s",
                "throughput_images_per_s", "latency_ms_p50", "latency_ms_p95", "skipped_images"):
        assert key in run.data.metrics, key
    assert run.data.metrics["top1"] == pytest.approx(result.metrics["top1"])
    assert "git_commit" in run.data.tags
    assert "device_name" in run.data.tags
    artifacts = {item.path for item in client.list_artifacts(result.mlflow_run_id)}
    assert {"resolved_config.yaml", "metrics.json", "per_class.csv", "predictions.csv", "skipped_images.csv"} <= artifacts
    experiment = client.get_experiment(result.mlflow_experiment_id)
    assert experiment.name == "readback"
    assert str(tmp_path / "mlruns") in experiment.artifact_location


def test_tracking_failure_keeps_results(compose_config, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the store's folder should be")
    cfg = eval_config(compose_config, "dataset.images_per_class=1", f"tracking.uri=sqlite:///{blocker}/db/mlflow.db")
    run_dir = tmp_path / "run"
    result = run_evaluation(cfg, run_dir)
    assert result.tracking_error is not None
    assert result.mlflow_run_id is None
    assert (run_dir / "metrics.json").is_file()
    assert (run_dir / "predictions.csv").is_file()


def bad_image_folder(tmp_path: Path) -> Path:
    root = ShapesDataset(images_per_class=2, seed=6).write_imagenet_folder(tmp_path / "shapes")
    copy_cases(REJECTED_CASES + ACCEPTED_CASES, root / "red_circle")
    return root


def test_bad_images_skipped_and_logged(compose_config, tmp_path, tracking_uri):
    root = bad_image_folder(tmp_path)
    cfg = eval_config(compose_config, "dataset=imagenet_folder", f"dataset.root={root}",
                      f"dataset.class_index={root / 'class_index.json'}")
    result = run_evaluation(cfg, tmp_path / "run")
    assert result.metrics["skipped_images"] == len(REJECTED_CASES)
    assert result.report.num_images == 48 + len(ACCEPTED_CASES)
    skipped_names = {Path(sample_id).name for sample_id, _ in result.inference.skipped}
    assert skipped_names == set(REJECTED_CASES)

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["skipped_images"] == len(REJECTED_CASES)
    local = Path(client.download_artifacts(result.mlflow_run_id, "skipped_images.csv", str(tmp_path)))
    with local.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {Path(row["sample_id"]).name for row in rows} == set(REJECTED_CASES)
    reasons = " ".join(row["reason"] for row in rows)
    assert "truncated" in reasons
    assert "too many pixels" in reasons


def test_bad_image_fail_fast(compose_config, tmp_path):
    from clipbench.errors import DatasetError

    root = bad_image_folder(tmp_path)
    cfg = eval_config(compose_config, "dataset=imagenet_folder", f"dataset.root={root}",
                      f"dataset.class_index={root / 'class_index.json'}", "runtime.on_bad_image=fail", "tracking=none")
    with pytest.raises(DatasetError, match="on_bad_image=fail"):
        run_evaluation(cfg, tmp_path / "run")


def test_custom_prompt_templates(compose_config, tmp_path):
    cfg = eval_config(compose_config, "prompts=custom", "prompts.templates=['a photo of a {c}.','a drawing of a {}.']",
                      "dataset.images_per_class=2", "tracking=none")
    result = run_evaluation(cfg, tmp_path / "run")
    assert result.params["templates"] == "custom"
    assert result.params["templates_count"] == 2
