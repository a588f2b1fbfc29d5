"""CLIPModelManager on the offline model: every method, its guards, and bad image input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipbench import CLIPModelManager
from clipbench.data.shapes import ShapesDataset
from clipbench.images import ImageDecodeError
from conftest import ACCEPTED_CASES, REJECTED_CASES


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def red_circle() -> bytes:
    shapes = ShapesDataset(images_per_class=1, seed=5)
    return png_bytes(shapes.image(shapes.classnames.index("red circle")))


def test_methods_before_initialize_raise():
    manager = CLIPModelManager("clipbench-tiny", pretrained=None)
    calls = [
        lambda: manager.encode_image(b"x"),
        lambda: manager.encode_text("a red circle"),
        lambda: manager.classify_image_with_labels(b"x", ["a"]),
        lambda: manager.compute_similarity(b"x", "a"),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="initialize"):
            call()
    assert manager.is_loaded is False


def test_initialize_unknown_architecture_names_matches():
    manager = CLIPModelManager("ViT-B-23", pretrained="laion2b_s34b_b79k")
    with pytest.raises(RuntimeError) as info:
        manager.initialize()
    assert "ViT-B-23" in str(info.value)
    assert "ViT-B-32" in str(info.value)


def test_initialize_missing_checkpoint(tmp_path):
    missing = tmp_path / "nope.safetensors"
    manager = CLIPModelManager("clipbench-tiny", pretrained=None, model_path=str(missing))
    with pytest.raises(RuntimeError, match="checkpoint file not found") as info:
        manager.initialize()
    assert str(missing) in str(info.value)


def test_initialize_sets_attributes(tiny_manager, offline_checkpoint):
    assert tiny_manager.is_loaded
    assert tiny_manager.model is not None
    assert not tiny_manager.model.training
    assert tiny_manager.preprocess is not None
    assert tiny_manager.tokenizer is not None
    assert tiny_manager.load_time > 0
    assert str(tiny_manager.device) == "cpu"
    assert len(tiny_manager.imagenet_labels) == 1000
    assert len(tiny_manager.text_descriptions) == 1000
    assert tiny_manager.imagenet_classes_path is None
    assert tiny_manager.model_path == str(offline_checkpoint)


def test_encode_image_unit_norm(tiny_manager, red_circle):
    features = tiny_manager.encode_image(red_circle)
    assert features.ndim == 1
    assert features.dtype == np.float32
    assert np.linalg.norm(features) == pytest.approx(1.0, abs=1e-5)


def test_encode_text_unit_norm(tiny_manager):
    features = tiny_manager.encode_text("a photo of a red circle")
    assert features.ndim == 1
    assert np.linalg.norm(features) == pytest.approx(1.0, abs=1e-5)


def test_encode_text_rejects_empty(tiny_manager):
    with pytest.raises(ValueError, match="non-empty"):
        tiny_manager.encode_text("   ")


def test_classify_with_labels_ranks_true_label(tiny_manager, red_circle):
    labels = ["red circle", "blue square", "green triangle", "yellow star"]
    ranked = tiny_manager.classify_image_with_labels(red_circle, labels, top_k=3)
    assert len(ranked) == 3
    assert ranked[0][0] == "red circle"
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    all_scores = tiny_manager.classify_image_with_labels(red_circle, labels, top_k=10)
    assert len(all_scores) == 4
    assert sum(score for _, score in all_scores) == pytest.approx(1.0, abs=1e-5)


def test_classify_rejects_bad_arguments(tiny_manager, red_circle):
    with pytest.raises(ValueError, match="top_k"):
        tiny_manager.classify_image_with_labels(red_circle, ["red circle"], top_k=0)
    with pytest.raises(ValueError, match="target_labels"):
        tiny_manager.classify_image_with_labels(red_circle, [], top_k=1)
    with pytest.raises(ValueError, match="target_labels"):
        tiny_manager.classify_image_with_labels(red_circle, ["red circle", " "], top_k=1)


def test_imagenet_features_built_once(tiny_manager, red_circle, monkeypatch):
    import clipbench.manager as manager_module

    calls = []
    original = manager_module.build_classifier

    def counting_build(*args, **kwargs):
        calls.append(len(args[1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(manager_module, "build_classifier", counting_build)
    tiny_manager._imagenet_text_features = None
    first = tiny_manager.classify_image_with_labels(red_circle, None, top_k=5)
    second = tiny_manager.classify_image_with_labels(red_circle, None, top_k=5)
    assert calls == [1000]
    assert first == second
    assert all(label in tiny_manager.imagenet_labels for label, _ in first)


def test_imagenet_probabilities_sum_to_one(tiny_manager, red_circle):
    ranked = tiny_manager.classify_image_with_labels(red_circle, None, top_k=1000)
    assert len(ranked) == 1000
    assert sum(score for _, score in ranked) == pytest.approx(1.0, abs=1e-4)


def test_compute_similarity_is_cosine(tiny_manager, red_circle):
    text = "a photo of a red circle"
    similarity = tiny_manager.compute_similarity(red_circle, text)
    expected = float(tiny_manager.encode_image(red_circle) @ tiny_manager.encode_text(text))
    assert similarity == pytest.approx(expected, abs=1e-5)
    assert -1.0 <= similarity <= 1.0


def test_similarity_prefers_matching_text(tiny_manager, red_circle):
    matching = tiny_manager.compute_similarity(red_circle, "a photo of a red circle.")
    other = tiny_manager.compute_similarity(red_circle, "a photo of a blue star.")
    assert matching > other


def test_get_model_info_fields(tiny_manager):
    info = tiny_manager.get_model_info()
    assert info["model_name"] == "clipbench-tiny"
    assert info["pretrained"] is None
    assert info["device"] == "cpu"
    assert info["precision"] == "fp32"
    assert info["load_time"] > 0
    assert info["num_imagenet_classes"] == 1000
    assert 7_000_000 < info["parameter_count"] < 9_000_000
    assert set(info["load_phases_s"]) == {"resolve_weights_s", "build_s", "load_weights_s", "to_device_s"}


def test_custom_class_index(tmp_path, offline_checkpoint, red_circle):
    index = tmp_path / "imagenet_class_index.json"
    index.write_text('{"0": ["s0", "red circle"], "1": ["s1", "blue star"], "2": ["s2", "green ring"]}')
    manager = CLIPModelManager("clipbench-tiny", None, str(offline_checkpoint), str(index), device="cpu")
    manager.initialize()
    assert manager.imagenet_labels == ["red circle", "blue star", "green ring"]
    ranked = manager.classify_image_with_labels(red_circle, None, top_k=3)
    assert ranked[0][0] == "red circle"


def test_malformed_class_index_names_line(tmp_path, offline_checkpoint):
    index = tmp_path / "broken.json"
    index.write_text('{"0": ["n01440764", "tench"],\n "1": ["n01443537" "goldfish"]}')
    manager = CLIPModelManager("clipbench-tiny", None, str(offline_checkpoint), str(index), device="cpu")
    with pytest.raises(RuntimeError, match="line 2") as info:
        manager.initialize()
    assert "broken.json" in str(info.value)


@pytest.mark.parametrize("name", REJECTED_CASES)
def test_manager_rejects_bad_image(tiny_manager, case_file, name):
    payload = case_file(name).read_bytes()
    with pytest.raises(ImageDecodeError) as info:
        tiny_manager.encode_image(payload, name=name)
    assert name in str(info.value)
    assert "object at 0x" not in str(info.value)


@pytest.mark.parametrize("name", ACCEPTED_CASES)
def test_manager_accepts_unusual_image(tiny_manager, case_file, name):
    ranked = tiny_manager.classify_image_with_labels(case_file(name).read_bytes(), ["red circle", "blue star"], top_k=1)
    assert len(ranked) == 1
    assert 0.0 <= ranked[0][1] <= 1.0


def test_bomb_reason_is_pixels(tiny_manager, case_file):
    with pytest.raises(ImageDecodeError) as info:
        tiny_manager.encode_image(case_file("bomb_20000x20000.png").read_bytes(), name="bomb.png")
    assert info.value.reason == "too many pixels"


def test_exif_orientation_applied(tiny_manager):
    # Left half red, right half blue; orientation 6 displays it rotated 90 degrees clockwise,
    # so the red half must end up on top.
    split = Image.new("RGB", (64, 64), (20, 20, 230))
    split.paste((230, 20, 20), (0, 0, 32, 64))
    exif = split.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    split.save(buffer, format="JPEG", exif=exif, quality=95)
    red = tiny_manager.image_tensor(buffer.getvalue())[0, 0]
    assert red[:16].mean() > red[-16:].mean() + 1.0
    assert abs(float(red[:, :16].mean() - red[:, -16:].mean())) < 0.5


def test_classify_rejects_label_string_and_repeats(tiny_manager, red_circle):
    with pytest.raises(ValueError, match="not one string"):
        tiny_manager.classify_image_with_labels(red_circle, "red circle")
    with pytest.raises(ValueError, match="repeats"):
        tiny_manager.classify_image_with_labels(red_circle, ["red circle", "red circle "])


@pytest.mark.parametrize("top_k", ["2", 1.5, True])
def test_classify_rejects_non_integer_top_k(tiny_manager, red_circle, top_k):
    with pytest.raises(ValueError, match="top_k"):
        tiny_manager.classify_image_with_labels(red_circle, ["red circle", "blue star"], top_k=top_k)
