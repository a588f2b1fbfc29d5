"""Data set registry: one loader per data set name, all returning ``LabeledImages``."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from clipbench.classes import ClassIndex
from clipbench.data.base import LabeledImages, Sample, apply_limits
from clipbench.data.folders import load_image_folder, load_imagenet_folder
from clipbench.data.huggingface import load_hf_images
from clipbench.data.shapes import ShapesDataset
from clipbench.errors import DatasetError


def load_shapes(images_per_class: int = 10, seed: int = 2) -> LabeledImages:
    """Generated shapes (default seed 2: the held-out split, disjoint from the training seed 1)."""
    shapes = ShapesDataset(images_per_class=images_per_class, seed=seed)
    classes = ClassIndex(tuple(shapes.class_ids), tuple(shapes.classnames))
    samples = [Sample(i, shapes.label(i), f"shapes/{seed}/{i:06d}") for i in range(len(shapes))]
    info = {"images_per_class": images_per_class, "seed": seed, "num_classes": len(classes)}
    return LabeledImages("shapes", classes, samples, shapes.image, info)


def _shapes(cfg: Mapping[str, Any]) -> LabeledImages:
    return load_shapes(cfg.get("images_per_class", 10), cfg.get("seed", 2))


def _imagenet_folder(cfg: Mapping[str, Any]) -> LabeledImages:
    return load_imagenet_folder(cfg.get("root"), cfg.get("class_index"), cfg.get("class_scope", "all"))


def _imagefolder(cfg: Mapping[str, Any]) -> LabeledImages:
    return load_image_folder(cfg.get("root"), cfg.get("classnames_file"))


def _imagenet_hf(cfg: Mapping[str, Any]) -> LabeledImages:
    return load_hf_images(
        cfg.get("hf_path") or "ILSVRC/imagenet-1k", cfg.get("split", "validation"), cfg.get("revision"),
        cfg.get("cache_dir"), cfg.get("image_column", "image"), cfg.get("label_column", "label"),
    )


DATASET_LOADERS: dict[str, Callable[[Mapping[str, Any]], LabeledImages]] = {
    "shapes": _shapes,
    "imagenet_folder": _imagenet_folder,
    "imagefolder": _imagefolder,
    "imagenet_hf": _imagenet_hf,
}


def build_dataset(cfg: Mapping[str, Any]) -> LabeledImages:
    """Load the data set named by ``cfg["name"]`` and apply its limits."""
    name = cfg.get("name")
    if name not in DATASET_LOADERS:
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_LOADERS)}")
    images = DATASET_LOADERS[name](cfg)
    images.samples = apply_limits(images.samples, cfg.get("limit_per_class"), cfg.get("limit_total"))
    if not images.samples:
        raise DatasetError(f"dataset {name} has no samples after applying its limits")
    images.info.update(limit_per_class=cfg.get("limit_per_class"), limit_total=cfg.get("limit_total"))
    return images


__all__ = ["LabeledImages", "Sample", "build_dataset", "load_shapes", "DATASET_LOADERS"]
