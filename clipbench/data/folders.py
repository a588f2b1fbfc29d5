"""Folder data sets: the ImageNet validation layout and any folder of class sub-folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from clipbench.classes import ClassIndex, resolve_class_index
from clipbench.data.base import LabeledImages, Sample
from clipbench.errors import DatasetError

log = logging.getLogger(__name__)

# Files with these suffixes are samples; a sample that fails to decode is skipped and reported.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
CLASS_SCOPES = ("all", "subset")


def _read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def _check_root(root: str | Path | None, dataset: str) -> Path:
    if root is None:
        raise DatasetError(f"dataset {dataset} needs a folder: set dataset.root=PATH")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"data folder not found: {root} (set dataset.root to an existing folder)")
    if not root.is_dir():
        raise DatasetError(f"dataset.root {root} is a file, not a folder")
    return root


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"no class folders in {root}: expected {root}/<class>/<image files>")
    return folders


def _image_files(folder: Path) -> tuple[list[Path], int]:
    """Return the image files below ``folder`` (sorted) and how many other files were ignored."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, len(files) - len(images)


def _collect(root: Path, folders: list[Path], labels: list[int]) -> tuple[list[Sample], int]:
    samples: list[Sample] = []
    ignored = 0
    for folder, label in zip(folders, labels):
        images, ignored_here = _image_files(folder)
        ignored += ignored_here
        samples.extend(Sample(str(p), label, str(p.relative_to(root))) for p in images)
    if ignored:
        log.warning("Ignored %d files without an image suffix (%s) under %s", ignored, ", ".join(sorted(IMAGE_SUFFIXES)), root)
    if not samples:
        raise DatasetError(f"no image files found under {root} (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return samples, ignored


def load_imagenet_folder(root: str | Path | None, class_index: str | Path | None = None,
                         class_scope: str = "all") -> LabeledImages:
    """Load ``root/<wnid>/*.JPEG``; labels come from the WordNet ID through the class index.

    ``class_scope="all"`` scores every image against all classes of the index (1000 for
    ImageNet), ``"subset"`` only against the classes that have a folder.
    """
    if class_scope not in CLASS_SCOPES:
        raise DatasetError(f"invalid dataset.class_scope {class_scope!r}: use one of {', '.join(CLASS_SCOPES)}")
    root = _check_root(root, "imagenet_folder")
    index = resolve_class_index(class_index)
    position = index.index_of()

    folders = _class_folders(root)
    unknown = [f.name for f in folders if f.name not in position]
    if unknown:
        raise DatasetError(
            f"{len(unknown)} folders in {root} are not class ids of the class index "
            f"({len(index)} classes), e.g. {unknown[:5]}: folder names must be WordNet IDs such as n01440764, "
            "or set dataset.class_index to a matching imagenet_class_index.json"
        )

    global_labels = sorted(position[f.name] for f in folders)
    if class_scope == "subset":
        classes = index.subset(global_labels)
        label_of = {wnid: i for i, wnid in enumerate(classes.wnids)}
    else:
        classes = index
        label_of = position
    ordered = sorted(folders, key=lambda f: position[f.name])
    samples, ignored = _collect(root, ordered, [label_of[f.name] for f in ordered])

    info = {"root": str(root), "class_scope": class_scope, "classes_present": len(folders),
            "num_classes": len(classes), "ignored_files": ignored}
    log.info("imagenet_folder %s: %d images in %d class folders, scored over %d classes (%s)",
             root, len(samples), len(folders), len(classes), class_scope)
    return LabeledImages("imagenet_folder", classes, samples, _read_bytes, info)


def _classnames_from_file(path: Path, folder_names: list[str]) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"class names file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetError(f"class names file {path} is not valid JSON: {err.msg} at line {err.lineno}, "
                               f"column {err.colno}") from err
        if not isinstance(mapping, dict):
            raise DatasetError(f"class names file {path} must map folder names to class names")
        missing = [name for name in folder_names if name not in mapping]
        if missing:
            raise DatasetError(f"class names file {path} has no entry for the folders {missing[:5]}")
        return [str(mapping[name]) for name in folder_names]

    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != len(folder_names):
        raise DatasetError(
            f"class names file {path} has {len(names)} names but there are {len(folder_names)} class folders; "
            "give one name per line in sorted folder order, or a JSON object {folder: name}"
        )
    return names


def load_image_folder(root: str | Path | None, classnames_file: str | Path | None = None) -> LabeledImages:
    """Load any ``root/<class>/<images>`` folder; class names are the folder names with
    underscores as spaces, or come from a file (one per line, or JSON ``{folder: name}``)."""
    root = _check_root(root, "imagefolder")
    folders = _class_folders(root)
    folder_names = [f.name for f in folders]
    if classnames_file is None:
        classnames = [name.replace("_", " ") for name in folder_names]
    else:
        classnames = _classnames_from_file(Path(classnames_file).expanduser(), folder_names)

    classes = ClassIndex(tuple(folder_names), tuple(classnames))
    samples, ignored = _collect(root, folders, list(range(len(folders))))
    info = {"root": str(root), "num_classes": len(classes), "ignored_files": ignored}
    return LabeledImages("imagefolder", classes, samples, _read_bytes, info)
