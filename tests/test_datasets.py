"""Tests for clipbench.data loaders and clipbench.classes, on folders and datasets built in tmp_path."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipbench import results
from clipbench.classes import ClassIndex, imagenet_class_index, load_class_index
from clipbench.data import DATASET_LOADERS, build_dataset, load_shapes
from clipbench.data.base import EvaluationDataset, Sample, apply_limits, collate_decoded
from clipbench.data.folders import load_image_folder, load_imagenet_folder
from clipbench.data.shapes import ShapesDataset
from clipbench.errors import ConfigError, DatasetError
from clipbench.metrics import classification_report

CASES_DIR = Path(__file__).parent / "data" / "cases"
REJECTED_CASES = ("bomb_20000x20000.png", "not_an_image.jpg", "truncated.jpg", "zero_bytes.jpg")
ACCEPTED_CASES = ("animated.gif", "cmyk.jpg", "extreme_aspect.png", "one_pixel.png",
                  "palette_transparency.png", "photo.webp")

# ImageNet-1k WordNet IDs with their label index (sorted-wnid order) and OpenAI class name.
TABBY = "n02123045"  # 281, "tabby cat"
ESPRESSO = "n07920052"  # 967, "espresso"
MISSILE_A = "n03773504"  # 657, "missile"
MISSILE_B = "n04008634"  # 744, "missile" (OpenAI's names repeat it)


def write_images(folder: Path, count: int, stem: str = "image", colour: tuple[int, int, int] = (200, 40, 40)) -> list[Path]:
    """Write ``count`` small JPEG files named ``<stem>_<i>.JPEG`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{stem}_{i}.JPEG"
        Image.new("RGB", (12, 10), colour).save(path, format="JPEG")
        paths.append(path)
    return paths


def write_wnid_folders(root: Path, counts: dict[str, int]) -> Path:
    for wnid, count in counts.items():
        write_images(root / wnid, count, stem=wnid)
    return root


def write_class_index(path: Path, raw: object) -> Path:
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def labels_by_folder(samples: list[Sample]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for sample in samples:
        found.setdefault(sample.sample_id.split("/")[0], set()).add(sample.label)
    return found


def image_size(image: Image.Image) -> torch.Tensor:
    """Stand-in for a model's preprocessing: returns the decoded size as a tensor."""
    return torch.tensor(image.size)


# ---------------------------------------------------------------------------
# shapes


def test_shapes_same_seed_identical():
    first = ShapesDataset(images_per_class=1, seed=5, size_px=32)
    second = ShapesDataset(images_per_class=1, seed=5, size_px=32)

    for index in range(len(first)):
        assert np.array_equal(np.asarray(first.image(index)), np.asarray(second.image(index))), f"image {index}"


def test_shapes_different_seed_differs():
    first = ShapesDataset(images_per_class=1, seed=5, size_px=32)
    second = ShapesDataset(images_per_class=1, seed=6, size_px=32)

    for index in range(len(first)):
        assert not np.array_equal(np.asarray(first.image(index)), np.asarray(second.image(index))), f"image {index}"


def test_shapes_labels_interleaved():
    images = load_shapes(images_per_class=3, seed=2)

    assert [sample.label for sample in images.samples] == [i % 24 for i in range(72)]


def test_shapes_classes():
    images = load_shapes(images_per_class=1)

    assert len(images.classes) == 24
    assert images.info["num_classes"] == 24
    assert images.classes.wnids[:3] == ("red_circle", "red_square", "red_triangle")
    assert images.classes.classnames[:3] == ("red circle", "red square", "red triangle")
    assert images.classes.classnames[-1] == "yellow ring"
    assert len(set(images.classes.classnames)) == 24


def test_shapes_sample_ids_and_read():
    images = load_shapes(images_per_class=1, seed=7)

    assert images.samples[0].sample_id == "shapes/7/000000"
    assert images.samples[23].sample_id == "shapes/7/000023"
    assert images.read(images.samples[5].ref).size == (128, 128)


def test_shapes_image_bytes_png():
    images = load_shapes(images_per_class=1, seed=7)

    data = images.image_bytes(3)

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(images.read(3)))


def test_shapes_rejects_zero_images():
    with pytest.raises(ValueError, match="images_per_class must be at least 1, got 0"):
        ShapesDataset(images_per_class=0)


def test_shapes_index_out_of_range():
    shapes = ShapesDataset(images_per_class=1, size_px=16)

    with pytest.raises(IndexError, match="index 24 out of range for 24 images"):
        shapes.image(24)


def test_shapes_write_imagenet_folder(tmp_path: Path):
    shapes = ShapesDataset(images_per_class=2, seed=3, size_px=32)

    root = shapes.write_imagenet_folder(tmp_path / "shapes")

    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(shapes.class_ids)
    assert sorted(p.name for p in (root / "red_circle").iterdir()) == ["red_circle_000000.JPEG", "red_circle_000024.JPEG"]
    for class_id in shapes.class_ids:
        assert len(list((root / class_id).glob("*.JPEG"))) == 2, class_id
    with Image.open(root / "blue_star" / "blue_star_000015.JPEG") as image:
        assert image.format == "JPEG"
        assert image.size == (32, 32)


def test_shapes_class_index_round_trip(tmp_path: Path):
    shapes = ShapesDataset(images_per_class=1, size_px=16)
    root = shapes.write_imagenet_folder(tmp_path / "shapes")

    classes = load_class_index(root / "class_index.json")

    assert classes.wnids == tuple(shapes.class_ids)
    assert classes.classnames == tuple(shapes.classnames)


def test_shapes_folder_loads_back(tmp_path: Path):
    shapes = ShapesDataset(images_per_class=2, seed=3, size_px=16)
    root = shapes.write_imagenet_folder(tmp_path / "shapes")

    images = build_dataset({"name": "imagenet_folder", "root": str(root), "class_index": str(root / "class_index.json")})

    assert len(images) == 48
    assert images.info["num_classes"] == 24
    # The class_index.json next to the class folders is a file, not a class folder.
    assert images.info["ignored_files"] == 0
    for folder, labels in labels_by_folder(images.samples).items():
        assert labels == {shapes.class_ids.index(folder)}, folder


# ---------------------------------------------------------------------------
# imagenet_folder


def test_imagenet_wnid_indices():
    # Anchors the constants above to the class index the loaders use.
    classes = imagenet_class_index()
    position = classes.index_of()

    assert position[TABBY] == 281
    assert classes.classnames[281] == "tabby cat"
    assert position[ESPRESSO] == 967
    assert classes.classnames[967] == "espresso"
    assert position[MISSILE_A] == 657
    assert position[MISSILE_B] == 744
    assert classes.classnames[657] == classes.classnames[744] == "missile"


def test_imagenet_folder_all_scope(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 2, ESPRESSO: 3})

    images = build_dataset({"name": "imagenet_folder", "root": str(root), "class_scope": "all"})

    assert len(images.classes) == 1000
    assert images.info["num_classes"] == 1000
    assert images.info["classes_present"] == 2
    assert len(images) == 5
    assert labels_by_folder(images.samples) == {TABBY: {281}, ESPRESSO: {967}}


def test_imagenet_folder_default_scope_all(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {ESPRESSO: 1})

    images = load_imagenet_folder(root)

    assert images.info["class_scope"] == "all"
    assert images.samples[0].label == 967


def test_imagenet_folder_subset_scope(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {ESPRESSO: 3, TABBY: 2})

    images = build_dataset({"name": "imagenet_folder", "root": str(root), "class_scope": "subset"})

    assert images.classes.wnids == (TABBY, ESPRESSO)
    assert images.classes.classnames == ("tabby cat", "espresso")
    assert images.info["num_classes"] == 2
    assert labels_by_folder(images.samples) == {TABBY: {0}, ESPRESSO: {1}}


def test_imagenet_folder_sample_order(tmp_path: Path):
    # Samples follow the class index order (tabby 281 before espresso 967), then file names.
    root = write_wnid_folders(tmp_path / "val", {ESPRESSO: 2, TABBY: 2})

    images = load_imagenet_folder(root)

    assert [s.sample_id for s in images.samples] == [
        f"{TABBY}/{TABBY}_0.JPEG", f"{TABBY}/{TABBY}_1.JPEG",
        f"{ESPRESSO}/{ESPRESSO}_0.JPEG", f"{ESPRESSO}/{ESPRESSO}_1.JPEG",
    ]
    assert images.samples[0].ref == str(root / TABBY / f"{TABBY}_0.JPEG")


def test_imagenet_folder_reads_bytes(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 1})
    images = load_imagenet_folder(root)

    data = images.read(images.samples[0].ref)

    assert data == (root / TABBY / f"{TABBY}_0.JPEG").read_bytes()
    assert images.image_bytes(0) == data


def test_imagenet_folder_unknown_folder(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 1, "cats": 1, "n99999999": 1})

    with pytest.raises(DatasetError) as caught:
        load_imagenet_folder(root)

    message = str(caught.value)
    assert "2 folders" in message
    assert "'cats'" in message
    assert "'n99999999'" in message
    assert TABBY not in message
    assert "dataset.class_index" in message


def test_imagenet_folder_missing_root(tmp_path: Path):
    missing = tmp_path / "no_such_folder"

    with pytest.raises(DatasetError, match="data folder not found") as caught:
        build_dataset({"name": "imagenet_folder", "root": str(missing)})

    assert str(missing) in str(caught.value)


def test_imagenet_folder_root_unset():
    with pytest.raises(DatasetError, match=r"dataset.root=PATH"):
        build_dataset({"name": "imagenet_folder"})


def test_imagenet_folder_root_is_file(tmp_path: Path):
    file_path = tmp_path / "val.tar"
    file_path.write_bytes(b"not a folder")

    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load_imagenet_folder(file_path)


def test_imagenet_folder_empty_root(tmp_path: Path):
    root = tmp_path / "val"
    root.mkdir()
    (root / ".cache").mkdir()

    with pytest.raises(DatasetError, match="no class folders in") as caught:
        load_imagenet_folder(root)

    assert str(root) in str(caught.value)


def test_imagenet_folder_no_images(tmp_path: Path):
    root = tmp_path / "val"
    (root / TABBY).mkdir(parents=True)
    (root / TABBY / "README.txt").write_text("no images here")

    with pytest.raises(DatasetError, match="no image files found under"):
        load_imagenet_folder(root)


def test_imagenet_folder_invalid_scope(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 1})

    with pytest.raises(DatasetError, match="invalid dataset.class_scope 'some'"):
        load_imagenet_folder(root, class_scope="some")


def test_imagenet_folder_ignores_non_images(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 2})
    (root / TABBY / "notes.txt").write_text("annotator notes")
    (root / TABBY / "boxes.xml").write_text("<annotation/>")
    (root / TABBY / ".DS_Store").write_bytes(b"\x00\x00")

    images = load_imagenet_folder(root)

    assert len(images) == 2
    assert images.info["ignored_files"] == 2
    assert all(s.sample_id.endswith(".JPEG") for s in images.samples)


def test_imagenet_folder_nested_and_suffix_case(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 1})
    write_images(root / TABBY / "extra", 1, stem="nested")
    Image.new("RGB", (8, 8)).save(root / TABBY / "upper.PNG", format="PNG")

    images = load_imagenet_folder(root)

    assert {s.sample_id for s in images.samples} == {
        f"{TABBY}/extra/nested_0.JPEG", f"{TABBY}/upper.PNG", f"{TABBY}/{TABBY}_0.JPEG",
    }


def test_imagenet_folder_bad_files_are_samples(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 1})
    for case in CASES_DIR.iterdir():
        shutil.copy(case, root / TABBY / case.name)

    images = load_imagenet_folder(root, class_scope="subset")

    names = sorted(Path(s.sample_id).name for s in images.samples)
    assert names == sorted([*REJECTED_CASES, *ACCEPTED_CASES, f"{TABBY}_0.JPEG"])
    assert images.info["ignored_files"] == 0


def test_evaluation_dataset_rejects_bad_files(tmp_path: Path):
    root = tmp_path / "val"
    (root / TABBY).mkdir(parents=True)
    for case in CASES_DIR.iterdir():
        shutil.copy(case, root / TABBY / case.name)
    images = load_imagenet_folder(root, class_scope="subset")

    items = [EvaluationDataset(images, image_size)[i] for i in range(len(images))]

    rejected = {Path(item.sample_id).name: item.error for item in items if item.error is not None}
    accepted = {Path(item.sample_id).name for item in items if item.error is None}
    assert sorted(rejected) == sorted(REJECTED_CASES)
    assert accepted == set(ACCEPTED_CASES)
    for name, reason in rejected.items():
        assert f"{TABBY}/{name}" in reason, reason


def test_evaluation_dataset_max_pixels(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 1})
    images = load_imagenet_folder(root)

    item = EvaluationDataset(images, image_size, max_image_pixels=100)[0]

    # The written images are 12 x 10 = 120 pixels.
    assert item.pixels is None
    assert "too many pixels" in item.error
    assert "limit 100" in item.error


def test_evaluation_dataset_missing_file(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 2})
    images = load_imagenet_folder(root)
    (root / TABBY / f"{TABBY}_1.JPEG").unlink()

    item = EvaluationDataset(images, image_size)[1]

    assert item.pixels is None
    assert f"{TABBY}/{TABBY}_1.JPEG" in item.error
    assert item.label == 281


def test_collate_sets_rejected_aside(tmp_path: Path):
    root = tmp_path / "val"
    (root / TABBY).mkdir(parents=True)
    for name in ("cmyk.jpg", "truncated.jpg", "one_pixel.png"):
        shutil.copy(CASES_DIR / name, root / TABBY / name)
    images = load_imagenet_folder(root)
    dataset = EvaluationDataset(images, image_size)

    batch = collate_decoded([dataset[i] for i in range(len(dataset))])

    assert batch.sample_ids == [f"{TABBY}/cmyk.jpg", f"{TABBY}/one_pixel.png"]
    assert batch.labels.tolist() == [281, 281]
    assert batch.pixels.shape == (2, 2)
    assert [sample_id for sample_id, _ in batch.skipped] == [f"{TABBY}/truncated.jpg"]


def test_collate_all_rejected():
    batch = collate_decoded([])

    assert batch.pixels is None
    assert batch.labels.shape == (0,)
    assert batch.skipped == []


# ---------------------------------------------------------------------------
# duplicate class names


def test_duplicate_names_all_scope(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {MISSILE_A: 2, MISSILE_B: 2})

    images = load_imagenet_folder(root)

    assert labels_by_folder(images.samples) == {MISSILE_A: {657}, MISSILE_B: {744}}
    assert images.classes.classnames[657] == images.classes.classnames[744] == "missile"


def test_duplicate_names_subset_scope(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {MISSILE_A: 2, MISSILE_B: 1})

    images = load_imagenet_folder(root, class_scope="subset")

    assert images.classes.wnids == (MISSILE_A, MISSILE_B)
    assert images.classes.classnames == ("missile", "missile")
    assert labels_by_folder(images.samples) == {MISSILE_A: {0}, MISSILE_B: {1}}


def test_duplicate_names_per_class_results(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {MISSILE_A: 2, MISSILE_B: 1, TABBY: 1})
    images = load_imagenet_folder(root, class_scope="subset")
    targets = torch.tensor([s.label for s in images.samples])
    # Every image is predicted as its own class.
    logits = torch.nn.functional.one_hot(targets, len(images.classes)).float()

    report = classification_report(logits, targets)
    path = results.write_per_class(tmp_path / "per_class.csv", report, images.classes)

    # Subset order follows the global index: tabby 281, missile 657, missile 744.
    assert report.per_class_count == {0: 1, 1: 2, 2: 1}
    with path.open(newline="") as file:
        rows = [row for row in csv.reader(file)][1:]
    missile_rows = [row for row in rows if "missile" in row]
    assert len(missile_rows) == 2
    assert {row[1] for row in missile_rows} == {MISSILE_A, MISSILE_B}


# ---------------------------------------------------------------------------
# class index JSON


def test_class_index_reads_classic_form(tmp_path: Path):
    path = write_class_index(tmp_path / "index.json", {
        "1": [ESPRESSO, "espresso"], "0": [TABBY, "tabby cat"],
    })

    classes = load_class_index(path)

    assert classes.wnids == (TABBY, ESPRESSO)
    assert classes.classnames == ("tabby cat", "espresso")


def test_class_index_malformed_json(tmp_path: Path):
    path = tmp_path / "index.json"
    # The comma after the first entry is missing: the parser stops at line 2, column 2.
    path.write_text('{"0": ["n01440764", "tench"]\n "1": ["n01443537", "goldfish"]}', encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_class_index(path)

    message = str(caught.value)
    assert str(path) in message
    assert "not valid JSON" in message
    assert "line 2, column 2" in message


def test_class_index_wrong_value_shape(tmp_path: Path):
    bad_values = {
        "a string": "n01440764",
        "three items": ["n01440764", "tench", "extra"],
        "an empty wnid": ["", "tench"],
        "a number": [1440764, "tench"],
    }
    for case, value in bad_values.items():
        path = write_class_index(tmp_path / "index.json", {"0": [TABBY, "tabby cat"], "1": value})

        with pytest.raises(ConfigError) as caught:
            load_class_index(path)

        message = str(caught.value)
        assert "key '1' must map to [wnid, class name]" in message, case
        assert str(path) in message, case


def test_class_index_missing_index(tmp_path: Path):
    path = write_class_index(tmp_path / "index.json", {"0": [TABBY, "tabby cat"], "2": [ESPRESSO, "espresso"]})

    with pytest.raises(ConfigError) as caught:
        load_class_index(path)

    message = str(caught.value)
    assert str(path) in message
    assert "missing [1]" in message


def test_class_index_non_digit_key(tmp_path: Path):
    path = write_class_index(tmp_path / "index.json", {"0": [TABBY, "tabby cat"], "one": [ESPRESSO, "espresso"]})

    with pytest.raises(ConfigError) as caught:
        load_class_index(path)

    message = str(caught.value)
    assert str(path) in message
    assert "key 'one' is not a class index" in message


def test_class_index_not_an_object(tmp_path: Path):
    for raw in ([[TABBY, "tabby cat"]], {}):
        path = write_class_index(tmp_path / "index.json", raw)

        with pytest.raises(ConfigError, match="must be a non-empty JSON object"):
            load_class_index(path)


def test_class_index_file_not_found(tmp_path: Path):
    with pytest.raises(ConfigError, match="class index file not found"):
        load_class_index(tmp_path / "absent.json")


def test_class_index_repeated_wnid(tmp_path: Path):
    path = write_class_index(tmp_path / "index.json", {"0": [TABBY, "tabby cat"], "1": [TABBY, "tabby"]})

    with pytest.raises(ConfigError, match=f"repeats the class ids \\['{TABBY}'\\]"):
        load_class_index(path)


def test_class_index_error_through_loader(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {TABBY: 1})
    path = write_class_index(tmp_path / "index.json", {"zero": [TABBY, "tabby cat"]})

    with pytest.raises(ConfigError, match="key 'zero'"):
        build_dataset({"name": "imagenet_folder", "root": str(root), "class_index": str(path)})


def test_class_index_custom_index_loader(tmp_path: Path):
    root = write_wnid_folders(tmp_path / "val", {"dog": 1, "cat": 2})
    path = write_class_index(tmp_path / "index.json", {"0": ["cat", "a cat"], "1": ["dog", "a dog"], "2": ["fox", "fox"]})

    images = load_imagenet_folder(root, class_index=path)

    assert images.info["num_classes"] == 3
    assert labels_by_folder(images.samples) == {"cat": {0}, "dog": {1}}


# ---------------------------------------------------------------------------
# imagefolder


def test_imagefolder_names_from_folders(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "golden_retriever", 2)
    write_images(root / "tabby_cat", 1)

    images = build_dataset({"name": "imagefolder", "root": str(root)})

    assert images.classes.wnids == ("golden_retriever", "tabby_cat")
    assert images.classes.classnames == ("golden retriever", "tabby cat")
    assert labels_by_folder(images.samples) == {"golden_retriever": {0}, "tabby_cat": {1}}
    assert images.info["num_classes"] == 2


def test_imagefolder_names_from_txt(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "b_folder", 1)
    write_images(root / "a_folder", 1)
    names = tmp_path / "names.txt"
    # One name per line in sorted folder order. Blank lines are skipped.
    names.write_text("first class\n\n  second class  \n", encoding="utf-8")

    images = load_image_folder(root, names)

    assert images.classes.wnids == ("a_folder", "b_folder")
    assert images.classes.classnames == ("first class", "second class")


def test_imagefolder_names_from_json(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "n1", 1)
    write_images(root / "n2", 1)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"n2": "dog", "n1": "cat", "n3": "unused"}), encoding="utf-8")

    images = load_image_folder(root, names)

    assert images.classes.wnids == ("n1", "n2")
    assert images.classes.classnames == ("cat", "dog")


def test_imagefolder_txt_count_mismatch(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "a", 1)
    write_images(root / "b", 1)
    names = tmp_path / "names.txt"
    names.write_text("only one\n", encoding="utf-8")

    with pytest.raises(DatasetError, match="has 1 names but there are 2 class folders"):
        load_image_folder(root, names)


def test_imagefolder_json_missing_folder(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "a", 1)
    write_images(root / "b", 1)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"a": "apple"}), encoding="utf-8")

    with pytest.raises(DatasetError, match=r"no entry for the folders \['b'\]"):
        load_image_folder(root, names)


def test_imagefolder_json_not_object(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "a", 1)
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["apple"]), encoding="utf-8")

    with pytest.raises(DatasetError, match="must map folder names to class names"):
        load_image_folder(root, names)


def test_imagefolder_json_malformed(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "a", 1)
    names = tmp_path / "names.json"
    # A trailing comma: the parser expects another key at line 2, column 1.
    names.write_text('{"a": "apple",\n}', encoding="utf-8")

    with pytest.raises(DatasetError) as caught:
        load_image_folder(root, names)

    message = str(caught.value)
    assert str(names) in message
    assert "not valid JSON" in message
    assert "line 2, column 1" in message


def test_imagefolder_names_file_missing(tmp_path: Path):
    root = tmp_path / "pets"
    write_images(root / "a", 1)

    with pytest.raises(DatasetError, match="class names file not found"):
        load_image_folder(root, tmp_path / "absent.txt")


# ---------------------------------------------------------------------------
# imagenet_hf from a local save_to_disk folder


@pytest.fixture
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep ``datasets`` offline with empty caches under tmp_path."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    return home


def shapes_table(class_label: bool = True):
    """A ``datasets.Dataset`` of one 32-pixel shapes image per class, with a ClassLabel label."""
    import datasets

    shapes = ShapesDataset(images_per_class=1, seed=3, size_px=32)
    label_feature = datasets.ClassLabel(names=shapes.class_ids) if class_label else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label_feature})
    columns = {"image": [shapes.image(i) for i in range(len(shapes))], "label": [shapes.label(i) for i in range(len(shapes))]}
    return datasets.Dataset.from_dict(columns, features=features), shapes


def test_hf_dataset_dict_split(tmp_path: Path, hf_offline: Path):
    import datasets

    table, shapes = shapes_table()
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": table.select([0]), "validation": table}).save_to_disk(str(saved))

    images = build_dataset({"name": "imagenet_hf", "hf_path": str(saved), "split": "validation"})

    assert images.name == "imagenet_hf"
    assert len(images) == 24
    assert images.classes.wnids == tuple(shapes.class_ids)
    assert images.classes.classnames == tuple(shapes.classnames)
    assert [s.label for s in images.samples] == list(range(24))
    assert images.samples[5].sample_id == "validation/5"
    assert images.info["num_classes"] == 24


def test_hf_images_decode_to_source(tmp_path: Path, hf_offline: Path):
    import datasets

    table, shapes = shapes_table()
    saved = tmp_path / "saved"
    datasets.DatasetDict({"validation": table}).save_to_disk(str(saved))
    images = build_dataset({"name": "imagenet_hf", "hf_path": str(saved)})

    item = EvaluationDataset(images, np.asarray)[7]

    assert item.error is None
    assert np.array_equal(item.pixels, np.asarray(shapes.image(7)))


def test_hf_train_split(tmp_path: Path, hf_offline: Path):
    import datasets

    table, _ = shapes_table()
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": table.select([0, 1]), "validation": table}).save_to_disk(str(saved))

    images = build_dataset({"name": "imagenet_hf", "hf_path": str(saved), "split": "train"})

    assert len(images) == 2
    assert images.samples[1].sample_id == "train/1"


def test_hf_bare_dataset(tmp_path: Path, hf_offline: Path):
    table, _ = shapes_table()
    saved = tmp_path / "bare"
    table.save_to_disk(str(saved))

    images = build_dataset({"name": "imagenet_hf", "hf_path": str(saved), "split": "validation"})

    assert len(images) == 24
    assert images.classes.classnames[0] == "red circle"


def test_hf_missing_split(tmp_path: Path, hf_offline: Path):
    import datasets

    table, _ = shapes_table()
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": table}).save_to_disk(str(saved))

    with pytest.raises(DatasetError) as caught:
        build_dataset({"name": "imagenet_hf", "hf_path": str(saved), "split": "validation"})

    message = str(caught.value)
    assert "no split 'validation'" in message
    assert "train" in message


def test_hf_folder_not_dataset(tmp_path: Path, hf_offline: Path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a dataset")

    with pytest.raises(DatasetError, match="not a Hugging Face dataset saved with save_to_disk") as caught:
        build_dataset({"name": "imagenet_hf", "hf_path": str(folder)})

    assert str(folder) in str(caught.value)


def test_hf_missing_column(tmp_path: Path, hf_offline: Path):
    table, _ = shapes_table()
    saved = tmp_path / "bare"
    table.save_to_disk(str(saved))

    with pytest.raises(DatasetError, match="has no column 'fine_label'"):
        build_dataset({"name": "imagenet_hf", "hf_path": str(saved), "label_column": "fine_label"})


def test_hf_integer_labels_use_imagenet(tmp_path: Path, hf_offline: Path):
    import datasets

    image = Image.new("RGB", (8, 8), (10, 20, 30))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": [image, image], "label": [281, 967]}, features=features)
    saved = tmp_path / "bare"
    table.save_to_disk(str(saved))

    images = build_dataset({"name": "imagenet_hf", "hf_path": str(saved)})

    assert len(images.classes) == 1000
    assert [images.classes.classnames[s.label] for s in images.samples] == ["tabby cat", "espresso"]


def test_hf_label_out_of_range(tmp_path: Path, hf_offline: Path):
    import datasets

    image = Image.new("RGB", (8, 8))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    # The ImageNet test split marks unlabelled images with -1.
    table = datasets.Dataset.from_dict({"image": [image, image, image], "label": [0, -1, 1000]}, features=features)
    saved = tmp_path / "bare"
    table.save_to_disk(str(saved))

    with pytest.raises(DatasetError, match=r"labels \[-1, 1000\] outside 0..999"):
        build_dataset({"name": "imagenet_hf", "hf_path": str(saved)})


def test_hf_bad_image_rejected(tmp_path: Path, hf_offline: Path):
    import datasets

    rows = [{"bytes": (CASES_DIR / name).read_bytes(), "path": None} for name in ("cmyk.jpg", "truncated.jpg")]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    table = datasets.Dataset.from_dict({"image": rows, "label": [0, 1]}, features=features)
    saved = tmp_path / "bare"
    table.save_to_disk(str(saved))
    images = build_dataset({"name": "imagenet_hf", "hf_path": str(saved)})
    dataset = EvaluationDataset(images, image_size)

    good, bad = dataset[0], dataset[1]

    assert good.error is None
    assert "validation/1" in bad.error
    assert "truncated or corrupt" in bad.error


HUB_OFFLINE_SCRIPT = textwrap.dedent("""
    import json
    from clipbench.data import build_dataset
    from clipbench.errors import DatasetError

    try:
        build_dataset({"name": "imagenet_hf", "hf_path": "ILSVRC/imagenet-1k", "split": "validation"})
    except DatasetError as err:
        print(json.dumps({"error": str(err)}))
    else:
        print(json.dumps({"error": None}))
""")


@pytest.mark.slow
def test_hf_hub_offline_message(tmp_path: Path):
    # datasets and huggingface_hub read HF_*_OFFLINE when imported, so a fresh interpreter
    # gets the offline settings before either is imported.
    home = tmp_path / "hf_home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(home),
               HF_DATASETS_CACHE=str(home / "datasets"), HF_HUB_CACHE=str(home / "hub"))

    completed = subprocess.run([sys.executable, "-c", HUB_OFFLINE_SCRIPT], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=180)

    assert completed.returncode == 0, completed.stderr[-2000:]
    message = json.loads(completed.stdout.strip().splitlines()[-1])["error"]
    assert message is not None
    assert "'ILSVRC/imagenet-1k'" in message
    assert "hf auth login" in message
    assert "HF_TOKEN" in message
    assert "accept its terms" in message
    assert "dataset=imagenet_folder" in message


# ---------------------------------------------------------------------------
# limits and the registry


def samples_of(labels: list[int]) -> list[Sample]:
    return [Sample(i, label, f"s{i}") for i, label in enumerate(labels)]


# Class 0 has four samples (s0, s1, s3, s6), class 1 one (s2), class 2 two (s4, s5).
LIMIT_LABELS = [0, 0, 1, 0, 2, 2, 0]


def ids(samples: list[Sample]) -> list[str]:
    return [sample.sample_id for sample in samples]


def test_limits_none_keeps_all():
    assert ids(apply_limits(samples_of(LIMIT_LABELS), None, None)) == ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]


def test_limit_per_class():
    # First two of each class, in data set order: class 0 keeps s0, s1; class 1 s2; class 2 s4, s5.
    assert ids(apply_limits(samples_of(LIMIT_LABELS), 2, None)) == ["s0", "s1", "s2", "s4", "s5"]


def test_limit_total_round_robin():
    # Round 1 takes the first of classes 0, 1, 2: s0, s2, s4. Round 2 takes s1 (class 0),
    # then the limit of 4 is reached.
    assert ids(apply_limits(samples_of(LIMIT_LABELS), None, 4)) == ["s0", "s2", "s4", "s1"]


def test_limit_total_skips_short_class():
    # Round 1: s0, s2, s4. Round 2: class 1 is used up, so s1 and s5. Round 3: s3.
    assert ids(apply_limits(samples_of(LIMIT_LABELS), None, 6)) == ["s0", "s2", "s4", "s1", "s5", "s3"]


def test_limit_total_above_size():
    # Nothing to cut: the data set order stays.
    assert ids(apply_limits(samples_of(LIMIT_LABELS), None, 7)) == ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]


def test_limits_both():
    # Per class 1 keeps s0, s2, s4; the total of 2 then takes class 0 and class 1.
    assert ids(apply_limits(samples_of(LIMIT_LABELS), 1, 2)) == ["s0", "s2"]


def test_limits_invalid_values():
    for value in (0, -1, 2.5, "3", True):
        for keyword in ("limit_per_class", "limit_total"):
            limits = {"limit_per_class": None, "limit_total": None, keyword: value}

            with pytest.raises(ConfigError, match=f"dataset.{keyword}") as caught:
                apply_limits(samples_of(LIMIT_LABELS), **limits)

            assert repr(value) in str(caught.value), (keyword, value)


def test_build_dataset_limits_shapes():
    images = build_dataset({"name": "shapes", "images_per_class": 3, "limit_per_class": 2, "limit_total": 30})

    # 2 per class gives 48 samples; a total of 30 takes one of each of the 24 classes, then 6 more.
    assert len(images) == 30
    assert sorted({s.label for s in images.samples}) == list(range(24))
    assert [s.label for s in images.samples[24:]] == [0, 1, 2, 3, 4, 5]
    assert images.info["limit_per_class"] == 2
    assert images.info["limit_total"] == 30


def test_build_dataset_invalid_limit():
    with pytest.raises(ConfigError, match="dataset.limit_total must be at least 1 or null, got 0"):
        build_dataset({"name": "shapes", "images_per_class": 1, "limit_total": 0})


def test_build_dataset_unknown_name():
    with pytest.raises(DatasetError) as caught:
        build_dataset({"name": "cifar10"})

    message = str(caught.value)
    assert "unknown dataset 'cifar10'" in message
    for name in DATASET_LOADERS:
        assert name in message


def test_build_dataset_shapes_defaults():
    images = build_dataset({"name": "shapes", "images_per_class": 1})

    assert len(images) == 24
    assert images.info["seed"] == 2
    assert isinstance(images.classes, ClassIndex)
