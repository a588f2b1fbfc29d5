"""Tests for clipbench.inference.run_inference with the offline clipbench-tiny model on CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from clipbench.data import LabeledImages, build_dataset, load_shapes
from clipbench.data.shapes import ShapesDataset
from clipbench.errors import DatasetError
from clipbench.inference import InferenceOutput, run_inference
from clipbench.loading import LoadedModel, ModelSpec, load_model
from clipbench.metrics import classification_report
from clipbench.offline_model import OFFLINE_CHECKPOINT, OFFLINE_MODEL_NAME
from clipbench.prompts import load_prompt_set
from clipbench.zero_shot import build_classifier

CASES_DIR = Path(__file__).parent / "data" / "cases"
REJECTED_CASES = ("bomb_20000x20000.png", "not_an_image.jpg", "truncated.jpg", "zero_bytes.jpg")
ACCEPTED_CASES = ("animated.gif", "cmyk.jpg", "extreme_aspect.png", "one_pixel.png",
                  "palette_transparency.png", "photo.webp")
# The bad files go into the folder of class 0, which comes first in data set order.
BAD_FILES_CLASS = "red_circle"


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    # CPU in fp32, so results do not depend on GPU kernels chosen per batch size.
    return load_model(ModelSpec(OFFLINE_MODEL_NAME, checkpoint_path=str(OFFLINE_CHECKPOINT), device="cpu"))


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shapes images per class in the ImageNet layout, plus every case file in one class folder."""
    root = ShapesDataset(images_per_class=2, seed=2).write_imagenet_folder(tmp_path_factory.mktemp("shapes_val"))
    for case in CASES_DIR.iterdir():
        shutil.copy(case, root / BAD_FILES_CLASS / case.name)
    return root


@pytest.fixture(scope="module")
def folder_images(shapes_folder: Path) -> LabeledImages:
    return build_dataset({"name": "imagenet_folder", "root": str(shapes_folder),
                          "class_index": str(shapes_folder / "class_index.json")})


@pytest.fixture(scope="module")
def classifier(loaded: LoadedModel, folder_images: LabeledImages) -> torch.Tensor:
    return build_classifier(loaded, folder_images.classes.classnames, load_prompt_set("simple"), cache_dir=None)


@pytest.fixture(scope="module")
def skip_output(loaded: LoadedModel, folder_images: LabeledImages, classifier: torch.Tensor) -> InferenceOutput:
    return run_inference(loaded, folder_images, classifier, batch_size=16, num_workers=0,
                         on_bad_image="skip", show_progress=False)


def case_id(file_name: str) -> str:
    return f"{BAD_FILES_CLASS}/{file_name}"


def run(loaded: LoadedModel, images: LabeledImages, classifier: torch.Tensor, **kwargs) -> InferenceOutput:
    options = {"batch_size": 16, "num_workers": 0, "show_progress": False, **kwargs}
    return run_inference(loaded, images, classifier, **options)


def test_folder_has_all_files(folder_images: LabeledImages):
    # 24 classes x 2 shapes images, plus the 10 case files.
    assert len(folder_images) == 58


def test_skip_lists_rejected_files(skip_output: InferenceOutput):
    skipped_ids = [sample_id for sample_id, _ in skip_output.skipped]

    # Data set order: the files of red_circle sorted by name.
    assert skipped_ids == [case_id(name) for name in REJECTED_CASES]


def test_skip_reasons_name_files(skip_output: InferenceOutput):
    for sample_id, reason in skip_output.skipped:
        assert f"'{sample_id}'" in reason, reason


def test_skip_reasons_by_case(skip_output: InferenceOutput):
    reasons = dict(skip_output.skipped)

    assert "too many pixels" in reasons[case_id("bomb_20000x20000.png")]
    assert "not a decodable image" in reasons[case_id("not_an_image.jpg")]
    assert "truncated or corrupt" in reasons[case_id("truncated.jpg")]
    assert "the input is empty" in reasons[case_id("zero_bytes.jpg")]


def test_skip_scores_accepted_files(skip_output: InferenceOutput):
    scored = set(skip_output.sample_ids)

    for name in ACCEPTED_CASES:
        assert case_id(name) in scored, name
    for name in REJECTED_CASES:
        assert case_id(name) not in scored, name


def test_skip_output_shapes(skip_output: InferenceOutput):
    # 58 files minus the 4 rejected ones.
    assert len(skip_output.sample_ids) == 54
    assert skip_output.logits.shape == (54, 24)
    assert skip_output.targets.shape == (54,)
    assert skip_output.logits.dtype == torch.float32
    assert torch.isfinite(skip_output.logits).all()
    assert skip_output.all_images == 54


def test_skip_targets_match_folders(skip_output: InferenceOutput, folder_images: LabeledImages):
    class_of_folder = folder_images.classes.index_of()

    for sample_id, target in zip(skip_output.sample_ids, skip_output.targets.tolist()):
        assert target == class_of_folder[sample_id.split("/")[0]], sample_id


def test_fail_names_first_bad_file(loaded: LoadedModel, folder_images: LabeledImages, classifier: torch.Tensor):
    for batch_size in (4, 64):
        with pytest.raises(DatasetError) as caught:
            run(loaded, folder_images, classifier, batch_size=batch_size, on_bad_image="fail")

        message = str(caught.value)
        assert case_id("bomb_20000x20000.png") in message, batch_size
        assert "truncated.jpg" not in message, batch_size
        assert "on_bad_image=fail" in message, batch_size


def test_fail_with_workers(loaded: LoadedModel, folder_images: LabeledImages, classifier: torch.Tensor):
    with pytest.raises(DatasetError, match="bomb_20000x20000.png"):
        run(loaded, folder_images, classifier, batch_size=8, num_workers=2, on_bad_image="fail")


def test_all_rejected_raises(tmp_path: Path, loaded: LoadedModel):
    root = tmp_path / "broken"
    (root / "junk").mkdir(parents=True)
    for name in REJECTED_CASES:
        shutil.copy(CASES_DIR / name, root / "junk" / name)
    images = build_dataset({"name": "imagefolder", "root": str(root)})
    classifier = build_classifier(loaded, images.classes.classnames, load_prompt_set("simple"), cache_dir=None)

    with pytest.raises(DatasetError) as caught:
        run(loaded, images, classifier, on_bad_image="skip")

    message = str(caught.value)
    assert "none of the 4 images" in message
    assert "junk/bomb_20000x20000.png" in message


def test_invalid_bad_image_policy(loaded: LoadedModel, folder_images: LabeledImages, classifier: torch.Tensor):
    with pytest.raises(DatasetError, match="invalid runtime.on_bad_image 'ignore'"):
        run(loaded, folder_images, classifier, on_bad_image="ignore")


def test_invalid_batch_size(loaded: LoadedModel, folder_images: LabeledImages, classifier: torch.Tensor):
    with pytest.raises(DatasetError, match="runtime.batch_size must be at least 1, got 0"):
        run(loaded, folder_images, classifier, batch_size=0)


def assert_same_predictions(first: InferenceOutput, second: InferenceOutput) -> None:
    assert first.sample_ids == second.sample_ids
    assert first.skipped == second.skipped
    assert torch.equal(first.targets, second.targets)
    assert torch.equal(first.logits.argmax(dim=1), second.logits.argmax(dim=1))
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=1e-4)


def test_batch_size_invariance(loaded: LoadedModel, folder_images: LabeledImages, classifier: torch.Tensor,
                               skip_output: InferenceOutput):
    # skip_output ran with batch size 16. Batch size 1 puts each rejected file in a batch of its own.
    for batch_size in (1, 7, 64):
        output = run(loaded, folder_images, classifier, batch_size=batch_size)

        assert_same_predictions(skip_output, output)


def test_num_workers_invariance(loaded: LoadedModel, folder_images: LabeledImages, classifier: torch.Tensor):
    without_workers = run(loaded, folder_images, classifier, batch_size=7, num_workers=0)
    with_workers = run(loaded, folder_images, classifier, batch_size=7, num_workers=2)

    assert_same_predictions(without_workers, with_workers)
    assert with_workers.sample_ids[:3] == [case_id("animated.gif"), case_id("cmyk.jpg"), case_id("extreme_aspect.png")]


def test_sample_ids_in_dataset_order(skip_output: InferenceOutput, folder_images: LabeledImages):
    rejected = {case_id(name) for name in REJECTED_CASES}
    expected = [s.sample_id for s in folder_images.samples if s.sample_id not in rejected]

    assert skip_output.sample_ids == expected


def test_shapes_order_and_targets(loaded: LoadedModel, classifier: torch.Tensor):
    images = load_shapes(images_per_class=2)

    output = run(loaded, images, classifier, batch_size=5)

    assert output.sample_ids == [s.sample_id for s in images.samples]
    assert output.targets.tolist() == [s.label for s in images.samples]


def test_warmup_excluded_from_timing(loaded: LoadedModel, classifier: torch.Tensor):
    images = load_shapes(images_per_class=1)

    output = run(loaded, images, classifier, batch_size=10, warmup_batches=1)

    # 24 images in batches of 10, 10, 4: the first batch is warm-up.
    assert output.all_images == 24
    assert output.timed_images == 14
    assert len(output.batch_latencies_ms) == 2
    assert output.throughput_images_per_s > 0


def test_warmup_skips_rejected_batch(tmp_path: Path, loaded: LoadedModel):
    # Folder "a_broken" sorts before the 24 shapes folders, so the first batch of 4 is the
    # 4 rejected files and no image of it is encoded.
    root = ShapesDataset(images_per_class=1, seed=2, size_px=32).write_imagenet_folder(tmp_path / "mixed")
    (root / "a_broken").mkdir()
    for name in REJECTED_CASES:
        shutil.copy(CASES_DIR / name, root / "a_broken" / name)
    images = build_dataset({"name": "imagefolder", "root": str(root)})
    classifier = build_classifier(loaded, images.classes.classnames, load_prompt_set("simple"), cache_dir=None)

    output = run(loaded, images, classifier, batch_size=4, warmup_batches=1)

    # Batches: 4 rejected, then 24 images in 6 encoded batches. The first encoded one is warm-up.
    assert [sample_id for sample_id, _ in output.skipped] == [f"a_broken/{name}" for name in REJECTED_CASES]
    assert output.all_images == 24
    assert output.timed_images == 20
    assert len(output.batch_latencies_ms) == 5


def test_model_beats_chance_on_shapes(loaded: LoadedModel, classifier: torch.Tensor):
    # Seed 2 is held out because the offline model was trained on seed 1. Chance is 1/24.
    images = load_shapes(images_per_class=2)

    output = run(loaded, images, classifier, batch_size=48)
    report = classification_report(output.logits, output.targets)

    assert report.top1 > 0.5
    assert report.top5 > report.top1


def test_duplicate_classnames_tie(loaded: LoadedModel):
    # Two classes with the same name, like ImageNet's two "missile" synsets, get identical
    # classifier columns, so their logits tie exactly and argmax takes the lower index.
    images = load_shapes(images_per_class=1)
    classnames = list(images.classes.classnames)
    classnames[1] = classnames[0]
    classifier = build_classifier(loaded, classnames, load_prompt_set("simple"), cache_dir=None)

    output = run(loaded, images, classifier)
    report = classification_report(output.logits, output.targets)
    predictions = output.logits.argmax(dim=1)

    assert torch.equal(output.logits[:, 0], output.logits[:, 1])
    assert predictions.ne(1).all()
    assert report.top1 == pytest.approx(float((predictions == output.targets).float().mean()))
    assert report.per_class_recall[1] == 0.0
