"""The `clipbench` console script in a subprocess, and composition of every shipped configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clipbench.config import validate_config
from conftest import REPO_ROOT

CLIPBENCH = str(Path(sys.executable).parent / "clipbench")
FAST = ["runtime.num_workers=0", "runtime.progress=false", "runtime.latency_requests=2"]


def run_cli(args: list[str], cwd: Path, env_updates: dict[str, str] | None = None, timeout_s: int = 300):
    env = {**os.environ, **(env_updates or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([CLIPBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.slow
def test_eval_default_runs_and_tracks(tmp_path, tracking_uri):
    completed = run_cli(["eval", "dataset.images_per_class=2", *FAST], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    run_dirs = list((tmp_path / "outputs" / "eval").glob("*/*"))
    assert len(run_dirs) == 1
    metrics = json.loads((run_dirs[0] / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("clipbench-eval")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    assert runs[0].data.metrics["top1"] == pytest.approx(metrics["top1"])
    assert not (tmp_path / "mlruns" / "mlartifacts").exists()
    assert not (tmp_path / "mlartifacts").exists()


def test_help_lists_eval(tmp_path):
    completed = run_cli(["--help"], cwd=tmp_path)
    assert completed.returncode == 0
    assert "eval" in completed.stdout


@pytest.mark.slow
def test_shapes_folder_then_eval(tmp_path, tracking_uri):
    completed = run_cli(["shapes", str(tmp_path / "shapes"), "--images-per-class", "2", "--seed", "9"], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    jpegs = sorted((tmp_path / "shapes").glob("*/*.JPEG"))
    assert len(jpegs) == 48
    assert (tmp_path / "shapes" / "class_index.json").is_file()

    completed = run_cli(["eval", "dataset=imagenet_folder", f"dataset.root={tmp_path / 'shapes'}",
                         f"dataset.class_index={tmp_path / 'shapes' / 'class_index.json'}", "tracking=none", *FAST],
                        cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    metrics = json.loads(next((tmp_path / "outputs" / "eval").glob("*/*/metrics.json")).read_text())
    assert metrics["num_images"] == 48
    assert metrics["top1"] >= 0.75


def test_shapes_rejects_bad_count(tmp_path):
    completed = run_cli(["shapes", str(tmp_path / "out"), "--images-per-class", "0"], cwd=tmp_path)
    assert completed.returncode == 2
    assert "--images-per-class" in completed.stderr


def test_unknown_command_fails(tmp_path):
    completed = run_cli(["evaluate"], cwd=tmp_path)
    assert completed.returncode == 2
    assert "unknown command 'evaluate'" in completed.stderr


def test_unknown_model_option_one_line(tmp_path):
    completed = run_cli(["eval", "model=vit_b99"], cwd=tmp_path)
    assert completed.returncode == 2
    lines = error_lines(completed.stderr)
    assert len(lines) == 1
    assert "model/vit_b99" in lines[0]
    assert "vit_b32_laion2b" in lines[0]
    assert "Traceback" not in completed.stderr


def test_invalid_value_one_line(tmp_path):
    completed = run_cli(["eval", "runtime.batch_size=many"], cwd=tmp_path)
    assert completed.returncode == 2
    lines = error_lines(completed.stderr)
    assert len(lines) == 1
    assert "runtime.batch_size" in lines[0]


def test_unknown_key_one_line(tmp_path):
    completed = run_cli(["eval", "runtime.batchsize=8"], cwd=tmp_path)
    assert completed.returncode == 2
    assert len(error_lines(completed.stderr)) == 1
    assert "batchsize" in completed.stderr


def test_sweep_with_bad_option_fails_early(tmp_path):
    completed = run_cli(["eval", "-m", "model=clipbench_tiny,vit_b99"], cwd=tmp_path)
    assert completed.returncode == 2
    assert "model/vit_b99" in completed.stderr
    assert not (tmp_path / "multirun").exists()


def test_missing_data_folder_one_line(tmp_path):
    missing = tmp_path / "no-such-folder"
    completed = run_cli(["eval", "dataset=imagenet_folder", f"dataset.root={missing}", "tracking=none"], cwd=tmp_path)
    assert completed.returncode == 1
    errors = [line for line in completed.stdout.splitlines() + completed.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert str(missing) in errors[0]
    assert "Traceback" not in completed.stderr


def test_verbose_shows_traceback(tmp_path):
    missing = tmp_path / "no-such-folder"
    completed = run_cli(["eval", "-v", "dataset=imagenet_folder", f"dataset.root={missing}", "tracking=none"],
                        cwd=tmp_path)
    assert completed.returncode == 1
    assert "Traceback" in completed.stderr
    assert "DatasetError" in completed.stderr


def test_unavailable_weights_actionable(tmp_path):
    completed = run_cli(["eval", "model=vit_b32_laion2b", "tracking=none", "model.cache_dir=" + str(tmp_path)],
                        cwd=tmp_path, env_updates={"HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 1
    output = completed.stdout + completed.stderr
    assert "not in the local cache" in output
    assert "model.checkpoint" in output


MODEL_CONFIGS = sorted(p.stem for p in (REPO_ROOT / "conf" / "model").glob("*.yaml"))
DATASET_CONFIGS = sorted(p.stem for p in (REPO_ROOT / "conf" / "dataset").glob("*.yaml"))


def test_shipped_model_configs_listed():
    assert set(MODEL_CONFIGS) == {
        "clipbench_tiny", "vit_b32_laion2b", "vit_b32_openai", "vit_b16_laion2b", "vit_l14_laion2b",
        "rn50_openai", "vit_b16_siglip_webli", "mobileclip_s1_datacompdr",
    }


@pytest.mark.parametrize("model", MODEL_CONFIGS)
@pytest.mark.parametrize("dataset", DATASET_CONFIGS)
def test_every_config_composes(compose_config, model, dataset):
    import open_clip

    from clipbench.offline_model import register_offline_model_config

    cfg = validate_config(compose_config([f"model={model}", f"dataset={dataset}"]))
    register_offline_model_config()
    assert cfg.model.name in open_clip.list_models()
    if cfg.model.pretrained is not None:
        assert cfg.model.pretrained in open_clip.list_pretrained_tags_by_model(cfg.model.name)
    if cfg.model.checkpoint is not None:
        assert Path(cfg.model.checkpoint).is_file()
    assert cfg.dataset.name == dataset


@pytest.mark.parametrize("group", ["prompts", "runtime", "tracking"])
def test_every_group_option_composes(compose_config, group):
    for option in sorted(p.stem for p in (REPO_ROOT / "conf" / group).glob("*.yaml")):
        cfg = validate_config(compose_config([f"{group}={option}"]))
        assert cfg is not None


def test_quick_gelu_from_openai_tag():
    import open_clip

    assert open_clip.get_pretrained_cfg("ViT-B-32", "openai")["quick_gelu"] is True
    assert open_clip.get_pretrained_cfg("RN50", "openai")["quick_gelu"] is True


def test_misspelt_key_suggests_key(tmp_path):
    completed = run_cli(["eval", "precision=bf16"], cwd=tmp_path)
    assert completed.returncode == 2
    lines = error_lines(completed.stderr)
    assert len(lines) == 1
    assert "runtime.precision" in lines[0]


def test_shapes_unwritable_output(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    completed = run_cli(["shapes", str(blocker)], cwd=tmp_path)
    assert completed.returncode == 1
    assert "cannot write" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_class_scope_accepted_for_any_dataset(compose_config):
    cfg = validate_config(compose_config(["dataset=shapes", "dataset.class_scope=subset"]))
    assert cfg.dataset.class_scope.value == "subset"
