"""Drive the JupyterLab widgets without a browser: set widget values, call methods or click, read outputs."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from clipbench.errors import ConfigError, DatasetError, ModelLoadError
from clipbench.evaluation import misclassified_samples
from clipbench.manager import CLIPModelManager
from clipbench.widgets import (
    ClassifierExplorer,
    EvaluationRunner,
    ModelSession,
    ModelSwitcher,
    SimilarityExplorer,
)
from clipbench.widgets import evaluation_runner as evaluation_runner_module
from clipbench.widgets.evaluation_runner import hydra_quote
from conftest import CASES_DIR, REJECTED_CASES

PNG_SIGNATURE = b"\x89PNG"
SHAPE_LABELS = "red circle\nblue square\ngreen triangle\nyellow star"
FAST_EVALUATION = ["runtime.device=cpu", "runtime.num_workers=0", "runtime.latency_requests=3", "runtime.progress=false"]


def upload_entry(name: str, content: bytes) -> dict:
    """One file as ipywidgets 8 FileUpload stores it."""
    return {"name": name, "type": "image/jpeg", "size": len(content), "content": memoryview(content),
            "last_modified": datetime.now(timezone.utc)}


def upload_case(upload, *names: str) -> None:
    upload.value = tuple(upload_entry(name, (CASES_DIR / name).read_bytes()) for name in names)


def is_png(value) -> bool:
    return bytes(value).startswith(PNG_SIGNATURE)


@pytest.fixture
def session(tiny_manager) -> ModelSession:
    """A session around a fresh manager that shares the offline model but not its templates or caches."""
    manager = CLIPModelManager.from_loaded(tiny_manager.loaded, tiny_manager.class_index, tiny_manager.prompt_set)
    return ModelSession(manager, device="cpu")


@pytest.fixture
def explorer(session) -> ClassifierExplorer:
    explorer = ClassifierExplorer(session)
    explorer.picker.gallery.value = "chelsea"
    explorer.picker.source.value = "gallery"
    return explorer


@pytest.fixture
def runner(tmp_path) -> EvaluationRunner:
    runner = EvaluationRunner(extra_overrides=FAST_EVALUATION, runs_dir=tmp_path / "runs")
    runner.dataset.value = "shapes"
    runner.limit_per_class.value = 2
    return runner


# ModelSession


def test_session_default_loads_offline_model():
    session = ModelSession(device="cpu")
    manager = session.manager
    assert manager.is_loaded
    assert manager.model_name == "clipbench-tiny"
    assert session.config_name == "clipbench_tiny"


def test_session_notifies_observers():
    session = ModelSession(device="cpu")
    seen = []
    session.add_observer(seen.append)
    manager = session.load("clipbench_tiny")
    assert seen == [manager]


def test_session_checkpoint_overrides_config(tmp_path, offline_checkpoint):
    copy = Path(shutil.copy(offline_checkpoint, tmp_path / "copy.safetensors"))
    session = ModelSession(device="cpu")
    manager = session.load("clipbench_tiny", f"  {copy}  ")
    assert manager.model_path == str(copy)
    assert session.checkpoint_path == str(copy)


def test_session_failed_load_keeps_manager(session, tmp_path):
    previous = session.manager
    seen = []
    session.add_observer(seen.append)
    with pytest.raises(ModelLoadError, match="not found"):
        session.load("clipbench_tiny", str(tmp_path / "missing.safetensors"))
    assert session.manager is previous
    assert seen == []


def test_session_unknown_config_raises(session):
    previous = session.manager
    with pytest.raises(ConfigError, match="clipbench_tiny"):
        session.load("no_such_model")
    assert session.manager is previous


def test_session_broken_observer_ignored():
    session = ModelSession(device="cpu")
    seen = []

    def broken(manager):
        raise TypeError("observer bug")

    session.add_observer(broken)
    session.add_observer(seen.append)
    manager = session.load()
    assert session.manager is manager
    assert seen == [manager]


# ModelSwitcher


def test_switcher_lists_model_configs(session):
    switcher = ModelSwitcher(session)
    assert "clipbench_tiny" in switcher.model.options
    assert "vit_b32_laion2b" in switcher.model.options


def test_switcher_status_before_load():
    switcher = ModelSwitcher(ModelSession(device="cpu"))
    assert "No model loaded yet" in switcher.status.value


def test_switcher_load_shows_model_facts():
    session = ModelSession(device="cpu")
    switcher = ModelSwitcher(session)
    switcher.model.value = "clipbench_tiny"
    switcher.load_button.click()
    status = switcher.status.value
    assert session.is_loaded
    assert "<td>device</td><td>cpu</td>" in status
    assert "<td>precision</td><td>fp32</td>" in status
    assert "<td>load time</td>" in status
    assert " s</td>" in status
    assert "7,979,009" in status
    assert not switcher.load_button.disabled


def test_switcher_bad_checkpoint_keeps_previous(session, tmp_path):
    previous = session.manager
    switcher = ModelSwitcher(session)
    switcher.checkpoint.value = str(tmp_path / "missing.safetensors")
    assert switcher.load() is None
    status = switcher.status.value
    assert "Loading clipbench_tiny failed" in status
    assert "checkpoint file not found" in status
    assert "Still using the previous model" in status
    assert "Traceback" not in status
    assert session.manager is previous
    assert previous.classify_image_with_labels((CASES_DIR / "one_pixel.png").read_bytes(), ["red", "blue"], top_k=1)


def test_switcher_corrupt_checkpoint_message(session, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    previous = session.manager
    switcher = ModelSwitcher(session)
    switcher.checkpoint.value = str(corrupt)
    switcher.load_button.click()
    assert "Loading clipbench_tiny failed" in switcher.status.value
    assert "corrupt.safetensors" in switcher.status.value
    assert session.manager is previous


def test_switcher_busy_while_loading(session, monkeypatch):
    seen = {}
    switcher = ModelSwitcher(session)

    def fake_load(model_config, checkpoint_path):
        seen["disabled"] = switcher.load_button.disabled
        seen["status"] = switcher.status.value
        raise ModelLoadError("stopped on purpose")

    monkeypatch.setattr(session, "load", fake_load)
    switcher.load_button.click()
    assert seen["disabled"] is True
    assert "Loading clipbench_tiny" in seen["status"]
    assert "stopped on purpose" in switcher.status.value
    assert not switcher.load_button.disabled


def test_switcher_follows_session_loads():
    session = ModelSession(device="cpu")
    switcher = ModelSwitcher(session)
    session.load()
    assert "Current model" in switcher.status.value


# ClassifierExplorer


def test_classifier_custom_labels_top_k(explorer):
    explorer.labels.value = SHAPE_LABELS
    explorer.top_k.value = 3
    result = explorer.classify()
    scores = [score for _, score in result]
    assert explorer.last_result == result
    assert len(result) == 3
    assert scores == sorted(scores, reverse=True)
    assert {label for label, _ in result} <= set(SHAPE_LABELS.splitlines())
    assert is_png(explorer.chart.value)
    assert is_png(explorer.image.value)
    assert explorer.message.value == ""


def test_classifier_matches_manager(explorer, session):
    explorer.labels.value = SHAPE_LABELS
    explorer.top_k.value = 4
    result = explorer.classify()
    photo = explorer.picker.photos["chelsea"].path
    expected = session.manager.classify_image_with_labels(photo.read_bytes(), SHAPE_LABELS.splitlines(), top_k=4)
    assert [label for label, _ in result] == [label for label, _ in expected]
    assert [score for _, score in result] == pytest.approx([score for _, score in expected], abs=1e-6)


def test_classifier_empty_labels_use_imagenet(explorer, session):
    explorer.labels.value = ""
    explorer.top_k.value = 5
    result = explorer.classify()
    assert len(result) == 5
    assert len(session.manager.imagenet_labels) == 1000
    assert all(label in session.manager.imagenet_labels for label, _ in result)


def test_classifier_whitespace_labels_use_imagenet(explorer, session):
    explorer.labels.value = "  \n\t\n   "
    explorer.top_k.value = 2
    result = explorer.classify()
    assert explorer.message.value == ""
    assert len(result) == 2
    assert all(label in session.manager.imagenet_labels for label, _ in result)


def test_classifier_ignores_blank_lines(explorer):
    explorer.labels.value = "\n  red circle  \n\n blue square\n\n"
    explorer.top_k.value = 5
    result = explorer.classify()
    assert sorted(label for label, _ in result) == ["blue square", "red circle"]


def test_classifier_button_click(explorer):
    explorer.labels.value = SHAPE_LABELS
    explorer.top_k.value = 2
    explorer.classify_button.click()
    assert len(explorer.last_result) == 2
    assert not explorer.classify_button.disabled


def test_classifier_applies_templates(explorer, session):
    explorer.labels.value = SHAPE_LABELS
    explorer.templates.value = "openai"
    explorer.classify()
    assert session.manager.prompt_set.name == "openai"
    assert len(session.manager.prompt_set.templates) == 80


@pytest.mark.parametrize("name", REJECTED_CASES)
def test_classifier_bad_upload_then_recovers(explorer, name):
    explorer.labels.value = SHAPE_LABELS
    upload_case(explorer.picker.upload, name)
    assert explorer.picker.source.value == "upload"
    assert explorer.classify() is None
    assert name in explorer.message.value
    assert "Cannot use" in explorer.message.value
    assert explorer.last_result == []
    assert bytes(explorer.chart.value) == b""
    assert not explorer.classify_button.disabled

    explorer.picker.source.value = "gallery"
    explorer.top_k.value = 2
    assert len(explorer.classify()) == 2
    assert explorer.message.value == ""


def test_classifier_upload_accepted(explorer):
    explorer.labels.value = SHAPE_LABELS
    explorer.top_k.value = 2
    upload_case(explorer.picker.upload, "photo.webp")
    assert len(explorer.classify()) == 2
    assert is_png(explorer.image.value)


def test_classifier_missing_upload_message(explorer):
    explorer.picker.source.value = "upload"
    assert explorer.classify() is None
    assert "Upload an image first" in explorer.message.value


def test_classifier_path_source(explorer, tmp_path):
    image = Path(shutil.copy(CASES_DIR / "one_pixel.png", tmp_path / "one pixel.png"))
    explorer.labels.value = SHAPE_LABELS
    explorer.top_k.value = 2
    explorer.picker.path.value = str(image)
    assert explorer.picker.source.value == "path"
    assert len(explorer.classify()) == 2


def test_classifier_missing_path_message(explorer, tmp_path):
    missing = tmp_path / "missing.jpg"
    explorer.picker.path.value = str(missing)
    assert explorer.classify() is None
    assert "Image file not found" in explorer.message.value
    assert str(missing) in explorer.message.value


def test_classifier_folder_path_message(explorer, tmp_path):
    explorer.picker.path.value = str(tmp_path)
    assert explorer.classify() is None
    assert "is a folder" in explorer.message.value


def test_classifier_escapes_message(explorer):
    explorer.picker.upload.value = (upload_entry("<b>x</b>.jpg", b""),)
    explorer.classify()
    assert "&lt;b&gt;x&lt;/b&gt;.jpg" in explorer.message.value
    assert "<b>x</b>" not in explorer.message.value


def test_classifier_reports_unexpected_error(explorer, monkeypatch):
    def broken(labels):
        raise TypeError("broken on purpose")

    monkeypatch.setattr(explorer, "_classify", broken)
    explorer.classify_button.click()
    assert "unexpected error: TypeError: broken on purpose" in explorer.message.value
    assert not explorer.classify_button.disabled


# SimilarityExplorer


def test_similarity_image_vs_texts(session):
    explorer = SimilarityExplorer(session)
    explorer.picker.gallery.value = "chelsea"
    explorer.picker.source.value = "gallery"
    texts = ["a photo of a cat", "a photo of a rocket", "a cup of coffee"]
    explorer.texts.value = "\n".join(texts) + "\n\n"
    matrix = explorer.compute()
    image_bytes = explorer.photos["chelsea"].path.read_bytes()
    assert matrix.shape == (1, 3)
    assert explorer.last_matrix is matrix
    for column, text in enumerate(texts):
        assert matrix[0, column] == pytest.approx(session.manager.compute_similarity(image_bytes, text), abs=1e-5)
    assert is_png(explorer.heatmap.value)


def test_similarity_images_vs_text(session):
    explorer = SimilarityExplorer(session)
    explorer.mode.value = "images_vs_text"
    explorer.gallery.value = ("chelsea", "coffee")
    upload_case(explorer.uploads, "one_pixel.png")
    explorer.text.value = "a photo of a cat"
    explorer.compute_button.click()
    matrix = explorer.last_matrix
    images = [explorer.photos["chelsea"].path.read_bytes(), explorer.photos["coffee"].path.read_bytes(),
              (CASES_DIR / "one_pixel.png").read_bytes()]
    assert matrix.shape == (3, 1)
    for row, image in enumerate(images):
        assert matrix[row, 0] == pytest.approx(session.manager.compute_similarity(image, "a photo of a cat"), abs=1e-5)
    assert is_png(explorer.heatmap.value)


def test_similarity_mode_switches_inputs(session):
    explorer = SimilarityExplorer(session)
    explorer.mode.value = "images_vs_text"
    assert explorer.single_image_inputs.layout.display == "none"
    assert explorer.several_images_inputs.layout.display is None


def test_similarity_empty_texts_message(session):
    explorer = SimilarityExplorer(session)
    explorer.texts.value = " \n\n"
    assert explorer.compute() is None
    assert "at least one text" in explorer.message.value


def test_similarity_no_images_message(session):
    explorer = SimilarityExplorer(session)
    explorer.mode.value = "images_vs_text"
    explorer.text.value = "a cat"
    assert explorer.compute() is None
    assert "no images given" in explorer.message.value


def test_similarity_missing_text_message(session):
    explorer = SimilarityExplorer(session)
    explorer.mode.value = "images_vs_text"
    explorer.gallery.value = ("chelsea",)
    assert explorer.compute() is None
    assert "Enter the text" in explorer.message.value


def test_similarity_bad_upload_then_recovers(session):
    explorer = SimilarityExplorer(session)
    explorer.mode.value = "images_vs_text"
    explorer.text.value = "a cat"
    upload_case(explorer.uploads, "one_pixel.png", "truncated.jpg")
    assert explorer.compute() is None
    assert "truncated.jpg" in explorer.message.value
    assert explorer.last_matrix is None

    explorer.uploads.value = ()
    explorer.gallery.value = ("chelsea",)
    assert explorer.compute().shape == (1, 1)
    assert explorer.message.value == ""


# EvaluationRunner


def test_runner_shapes_shows_results(runner, tracking_uri, tmp_path):
    result = runner.run()
    assert runner.last_result is result
    assert runner.message.value == ""
    assert f"<td>top-1</td><td>{result.metrics['top1']:.1%}</td>" in runner.metrics_table.value
    assert f"<td>top-5</td><td>{result.metrics['top5']:.1%}</td>" in runner.metrics_table.value
    assert "<td>mean per-class recall</td>" in runner.metrics_table.value
    assert "<td>images</td><td>48</td>" in runner.metrics_table.value
    assert is_png(runner.per_class_chart.value)
    assert result.mlflow_run_id
    assert result.mlflow_run_id in runner.tracking.value
    assert tracking_uri in runner.tracking.value
    assert result.run_dir.parent == tmp_path / "runs"
    assert "Finished" in runner.status.value
    assert not runner.run_button.disabled


def test_runner_misclassified_grid(runner):
    result = runner.run()
    wrong = misclassified_samples(result)
    assert wrong
    assert is_png(runner.misclassified_chart.value)
    assert f"first {len(wrong)}" in runner.misclassified_caption.value


def test_runner_tracking_off(runner):
    runner.extra_overrides.append("tracking=none")
    result = runner.run()
    assert result.mlflow_run_id is None
    assert "tracking is off" in runner.tracking.value


def test_runner_tracking_error_shown(runner, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    runner.extra_overrides.append(f"tracking.uri=sqlite:///{blocker}/mlflow.db")
    result = runner.run()
    assert result.tracking_error
    assert "failed" in runner.tracking.value
    assert is_png(runner.per_class_chart.value)


def test_runner_missing_root_message(runner):
    runner.dataset.value = "imagenet_folder"
    runner.root.value = "  "
    assert runner.run() is None
    assert "dataset.root" in runner.message.value
    assert runner.last_result is None
    assert bytes(runner.per_class_chart.value) == b""
    assert not runner.run_button.disabled


def test_runner_missing_root_folder_message(runner, tmp_path):
    runner.dataset.value = "imagefolder"
    runner.root.value = str(tmp_path / "no such folder")
    assert runner.run() is None
    assert "no such folder" in runner.message.value


def test_runner_negative_limit_message(runner):
    runner.limit_per_class.value = -1
    assert runner.run() is None
    assert "positive number" in runner.message.value


def test_runner_interpolation_root_message(runner):
    runner.dataset.value = "imagefolder"
    runner.root.value = "/data/${oops}"
    assert runner.run() is None
    assert "interpolation" in runner.message.value


def test_runner_overrides(runner, session):
    runner.session = session
    runner.model.value = "vit_b32_laion2b"
    runner.dataset.value = "imagefolder"
    runner.root.value = " /data/my photos "
    runner.templates.value = "simple"
    runner.limit_per_class.value = 3
    overrides = runner.overrides()
    assert overrides[:5] == ["model=vit_b32_laion2b", "dataset=imagefolder", "prompts=simple",
                             "dataset.root='/data/my photos'", "dataset.limit_per_class=3"]
    assert "runtime.device=cpu" in overrides
    assert overrides[-len(FAST_EVALUATION):] == FAST_EVALUATION


def test_runner_zero_limit_means_all(runner):
    runner.limit_per_class.value = 0
    assert not any(override.startswith("dataset.limit_per_class") for override in runner.overrides())


def test_runner_follows_session_model(session, tmp_path):
    runner = EvaluationRunner(session, runs_dir=tmp_path)
    session.load("clipbench_tiny")
    assert runner.model.value == "clipbench_tiny"


def test_runner_busy_while_running(runner, monkeypatch):
    seen = {}

    def fake_run_evaluation(cfg, run_dir):
        seen["disabled"] = runner.run_button.disabled
        seen["status"] = runner.status.value
        raise DatasetError("stopped on purpose")

    monkeypatch.setattr(evaluation_runner_module, "run_evaluation", fake_run_evaluation)
    runner.run_button.click()
    assert seen["disabled"] is True
    assert "Running" in seen["status"]
    assert "stopped on purpose" in runner.message.value
    assert not runner.run_button.disabled


def test_hydra_quote_keeps_specials():
    assert hydra_quote("/a b/it's") == "'/a b/it\\'s'"
    assert hydra_quote("C:\\data\\") == "'C:\\data\\\\'"
