"""Library pieces the widgets use: sample photos, similarity matrices, plots, config composition,
misclassified samples and prompt template switching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from clipbench.classes import imagenet_class_index
from clipbench.config import compose_eval_config
from clipbench.data import Sample
from clipbench.errors import ConfigError
from clipbench.evaluation import misclassified_samples, run_evaluation
from clipbench.manager import CLIPModelManager
from clipbench.offline_model import OFFLINE_CHECKPOINT
from clipbench.plots import (
    figure_png,
    image_grid_figure,
    label_scores_figure,
    per_class_accuracy_figure,
    similarity_heatmap_figure,
)
from clipbench.samples import sample_photos
from clipbench.similarity import similarity_matrix

SAMPLE_NAMES = {"grace_hopper", "chelsea", "coffee", "rocket", "astronaut", "motorcycle"}
TEXTS = ["a photo of a cat", "a cup of coffee", "a rocket"]


@pytest.fixture(scope="module")
def photo_bytes() -> dict[str, bytes]:
    return {name: photo.path.read_bytes() for name, photo in sample_photos().items()}


@pytest.fixture
def own_manager(tiny_manager) -> CLIPModelManager:
    """A manager sharing the offline model, so template changes stay out of the session fixture."""
    return CLIPModelManager.from_loaded(tiny_manager.loaded, tiny_manager.class_index, tiny_manager.prompt_set)


@pytest.fixture(scope="module")
def shapes_result(tmp_path_factory):
    cfg = compose_eval_config(["dataset.limit_per_class=2", "tracking=none", "runtime.device=cpu",
                               "runtime.num_workers=0", "runtime.latency_requests=0", "runtime.progress=false"])
    return run_evaluation(cfg, tmp_path_factory.mktemp("shapes-run"))


# samples


def test_sample_photos_all_present():
    assert set(sample_photos()) == SAMPLE_NAMES


def test_sample_photos_files_exist():
    for name, photo in sample_photos().items():
        assert photo.path.is_file(), name
        assert photo.name == name


def test_sample_photos_classes_in_imagenet():
    classnames = set(imagenet_class_index().classnames)
    for photo in sample_photos().values():
        assert photo.imagenet_classname in classnames, photo.name


def test_sample_photos_decode():
    for photo in sample_photos().values():
        with Image.open(photo.path) as image:
            assert min(image.size) > 100, photo.name


# similarity_matrix


def test_similarity_matrix_shape(tiny_manager, photo_bytes):
    images = [photo_bytes["chelsea"], photo_bytes["coffee"]]
    matrix = similarity_matrix(tiny_manager, images, TEXTS)
    assert matrix.shape == (2, 3)


def test_similarity_matrix_equals_pairwise(tiny_manager, photo_bytes):
    images = [photo_bytes["chelsea"], photo_bytes["rocket"]]
    matrix = similarity_matrix(tiny_manager, images, TEXTS)
    for row, image in enumerate(images):
        for column, text in enumerate(TEXTS):
            assert matrix[row, column] == pytest.approx(tiny_manager.compute_similarity(image, text), abs=1e-5)


def test_similarity_matrix_strips_texts(tiny_manager, photo_bytes):
    padded = similarity_matrix(tiny_manager, [photo_bytes["coffee"]], ["  a cup of coffee \n"])
    plain = similarity_matrix(tiny_manager, [photo_bytes["coffee"]], ["a cup of coffee"])
    assert np.allclose(padded, plain, atol=1e-6)


def test_similarity_matrix_no_images(tiny_manager):
    with pytest.raises(ValueError, match="no images given"):
        similarity_matrix(tiny_manager, [], TEXTS)


def test_similarity_matrix_no_texts(tiny_manager, photo_bytes):
    with pytest.raises(ValueError, match="texts must be"):
        similarity_matrix(tiny_manager, [photo_bytes["chelsea"]], [])


def test_similarity_matrix_blank_text(tiny_manager, photo_bytes):
    with pytest.raises(ValueError, match="texts must be"):
        similarity_matrix(tiny_manager, [photo_bytes["chelsea"]], ["a cat", "   "])


def test_similarity_matrix_names_bad_image(tiny_manager, case_file):
    with pytest.raises(ValueError, match="upload.jpg"):
        similarity_matrix(tiny_manager, [case_file("truncated.jpg").read_bytes()], TEXTS, image_names=["upload.jpg"])


# plots


def test_label_scores_figure():
    figure = label_scores_figure(["cat", "dog", "car"], [0.6, 0.3, 0.1], title="top 3")
    axes = figure.axes[0]
    assert isinstance(figure, Figure)
    assert len(axes.patches) == 3
    assert len(axes.texts) == 3
    assert [label.get_text() for label in axes.get_yticklabels()] == ["cat", "dog", "car"]


def test_heatmap_text_per_cell():
    similarities = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    figure = similarity_heatmap_figure(similarities, ["a.png", "b.png"], TEXTS)
    axes = figure.axes[0]
    assert isinstance(figure, Figure)
    assert len(axes.texts) == 6
    assert [text.get_text() for text in axes.texts] == ["0.000", "0.100", "0.200", "0.300", "0.400", "0.500"]


def test_per_class_accuracy_worst_first():
    figure = per_class_accuracy_figure(["a", "b", "c", "d"], [0.9, 0.1, 0.5, 1.0], max_classes=2)
    axes = figure.axes[0]
    assert isinstance(figure, Figure)
    assert len(axes.patches) == 2
    assert [label.get_text() for label in axes.get_yticklabels()] == ["b", "c"]


def test_image_grid_layout():
    images = [Image.new("RGB", (8, 8), color) for color in ("red", "green", "blue", "white", "black")]
    figure = image_grid_figure(images, [f"image {i}" for i in range(5)], columns=4)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 8
    assert sum(len(axes.images) for axes in figure.axes) == 5
    assert figure.axes[4].get_title() == "image 4"


def test_figure_png_signature():
    png = figure_png(label_scores_figure(["cat"], [1.0]))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


# compose_eval_config


def test_compose_applies_overrides():
    cfg = compose_eval_config(["model=vit_b32_laion2b", "dataset.limit_per_class=3", "prompts=simple"])
    assert cfg.model.name == "ViT-B-32"
    assert cfg.model.pretrained == "laion2b_s34b_b79k"
    assert cfg.dataset.limit_per_class == 3
    assert cfg.prompts.name == "simple"


def test_compose_default_is_offline_model():
    cfg = compose_eval_config()
    assert cfg.model.name == "clipbench-tiny"
    assert cfg.model.checkpoint == str(OFFLINE_CHECKPOINT)


def test_compose_bad_option_one_line():
    with pytest.raises(ConfigError) as caught:
        compose_eval_config(["model=no_such_model"])
    message = str(caught.value)
    assert "\n" not in message
    assert "no_such_model" in message
    assert "clipbench_tiny" in message


def test_compose_bad_value_names_key():
    with pytest.raises(ConfigError, match="runtime.batch_size"):
        compose_eval_config(["runtime.batch_size=many"])


def test_compose_twice_in_a_row():
    first = compose_eval_config(["dataset.limit_per_class=2"])
    second = compose_eval_config()
    assert first.dataset.limit_per_class == 2
    assert second.dataset.limit_per_class is None


def test_compose_after_error():
    with pytest.raises(ConfigError):
        compose_eval_config(["dataset=no_such_dataset"])
    assert compose_eval_config(["dataset=shapes"]).dataset.name == "shapes"


# misclassified_samples


def crafted_result():
    """Four samples, the second skipped at decoding, the last two of the rest predicted wrong."""
    samples = [Sample(i, label, f"sample-{i}") for i, label in enumerate([0, 1, 2, 0])]
    logits = torch.tensor([[2.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 5.0, 0.0]])
    inference = SimpleNamespace(logits=logits, targets=torch.tensor([0, 2, 0]),
                                sample_ids=["sample-0", "sample-2", "sample-3"])
    return SimpleNamespace(images=SimpleNamespace(samples=samples), inference=inference)


def test_misclassified_crafted():
    result = crafted_result()
    probabilities = result.inference.logits.softmax(dim=1)
    wrong = misclassified_samples(result)
    assert [(index, target, predicted) for index, target, predicted, _ in wrong] == [(2, 2, 0), (3, 0, 1)]
    assert wrong[0][3] == pytest.approx(float(probabilities[1, 0]))
    assert wrong[1][3] == pytest.approx(float(probabilities[2, 1]))


def test_misclassified_max_samples():
    assert len(misclassified_samples(crafted_result(), max_samples=1)) == 1


def test_misclassified_consistent_with_predictions(shapes_result):
    predicted = shapes_result.inference.logits.argmax(dim=1)
    wrong_count = int((predicted != shapes_result.inference.targets).sum())
    samples = misclassified_samples(shapes_result, max_samples=len(shapes_result.images))
    assert wrong_count > 0
    assert len(samples) == wrong_count
    for index, target, predicted_label, probability in samples:
        row = shapes_result.inference.sample_ids.index(shapes_result.images.samples[index].sample_id)
        assert shapes_result.images.samples[index].label == target
        assert predicted_label == int(predicted[row])
        assert predicted_label != target
        assert 0.0 < probability <= 1.0


# CLIPModelManager.set_templates


def test_set_templates_named(own_manager):
    own_manager.set_templates("openai")
    assert own_manager.prompt_set.name == "openai"
    assert len(own_manager.prompt_set.templates) == 80
    assert own_manager.get_model_info()["num_templates"] == 80


def test_set_templates_list(own_manager):
    own_manager.set_templates(["a drawing of a {}.", "a {} in the wild."])
    assert own_manager.prompt_set.name == "custom"
    assert len(own_manager.prompt_set.templates) == 2
    assert own_manager.text_descriptions[0] == f"a drawing of a {own_manager.imagenet_labels[0]}."


def test_set_templates_clears_features(own_manager, monkeypatch):
    import clipbench.manager as manager_module

    own_manager.set_templates("simple")
    before = own_manager.label_text_features(["red circle", "blue square"])
    calls = []
    original = manager_module.build_classifier

    def counting_build(loaded, classnames, prompts, **kwargs):
        calls.append(len(prompts.templates))
        return original(loaded, classnames, prompts, **kwargs)

    monkeypatch.setattr(manager_module, "build_classifier", counting_build)
    own_manager.set_templates("openai")
    after = own_manager.label_text_features(["red circle", "blue square"])
    assert calls == [80]
    assert not torch.allclose(before, after)


def test_set_templates_unknown_name(own_manager):
    with pytest.raises(ConfigError, match="prompt set .fancy. has no templates"):
        own_manager.set_templates("fancy")
