"""ImageNet-1k validation (or any image classification set) through Hugging Face ``datasets``."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from clipbench.classes import ClassIndex, imagenet_class_index
from clipbench.data.base import LabeledImages, Sample
from clipbench.errors import DatasetError

log = logging.getLogger(__name__)

IMAGENET_HF_PATH = "ILSVRC/imagenet-1k"


def _open_dataset(path: str, split: str, revision: str | None, cache_dir: str | None):
    import datasets

    local = Path(path).expanduser()
    if local.is_dir():
        try:
            loaded = datasets.load_from_disk(str(local))
        except FileNotFoundError as err:
            raise DatasetError(f"folder {local} is not a Hugging Face dataset saved with save_to_disk: {err}") from err
        if not isinstance(loaded, datasets.DatasetDict):
            return loaded
        if split not in loaded:
            raise DatasetError(f"Hugging Face dataset {path!r} has no split {split!r}: set dataset.split to one of {', '.join(loaded)}")
        return loaded[split]

    try:
        return datasets.load_dataset(path, split=split, revision=revision, cache_dir=cache_dir)
    except Exception as err:  # datasets and huggingface_hub raise many types for auth, network and cache misses
        raise DatasetError(
            f"could not open Hugging Face dataset {path!r} (split {split!r}): {str(err).splitlines()[0] if str(err) else type(err).__name__}. "
            f"ImageNet-1k is gated: accept its terms on the dataset page, then run `hf auth login` "
            "(or set HF_TOKEN) on a machine with internet access; a dataset saved with save_to_disk can be "
            "given as a local folder in dataset.hf_path; or use dataset=imagenet_folder dataset.root=PATH."
        ) from err


def _image_reader(table, image_column: str):
    def read(row: int) -> bytes:
        value = table[row][image_column]
        if isinstance(value, dict) and value.get("bytes"):
            return value["bytes"]
        if isinstance(value, dict) and value.get("path"):
            return Path(value["path"]).read_bytes()
        if hasattr(value, "save"):
            buffer = io.BytesIO()
            value.save(buffer, format="PNG")
            return buffer.getvalue()
        raise DatasetError(f"row {row}: column {image_column!r} contains no image")

    return read


def load_hf_images(path: str = IMAGENET_HF_PATH, split: str = "validation", revision: str | None = None,
                   cache_dir: str | None = None, image_column: str = "image", label_column: str = "label",
                   classnames: list[str] | None = None) -> LabeledImages:
    """Open a Hugging Face image classification split; images are decoded by clipbench, not by ``datasets``.

    Class names default to the dataset's ``ClassLabel`` names, or to ImageNet-1k with OpenAI's
    names when the labels are the 1000 ImageNet indices.
    """
    import datasets

    table = _open_dataset(path, split, revision, cache_dir)
    for column in (image_column, label_column):
        if column not in table.column_names:
            raise DatasetError(f"Hugging Face dataset {path!r} has no column {column!r}; columns: {table.column_names}")
    table = table.cast_column(image_column, datasets.Image(decode=False))

    labels = table[label_column]
    label_feature = table.features[label_column]
    if classnames is not None:
        classes = ClassIndex(tuple(str(i) for i in range(len(classnames))), tuple(classnames))
    elif isinstance(label_feature, datasets.ClassLabel) and label_feature.num_classes != 1000:
        names = tuple(label_feature.names)
        classes = ClassIndex(names, tuple(n.replace("_", " ") for n in names))
    else:
        classes = imagenet_class_index()

    bad = sorted({label for label in labels if not 0 <= int(label) < len(classes)})
    if bad:
        raise DatasetError(f"Hugging Face dataset {path!r} has labels {bad[:5]} outside 0..{len(classes) - 1}")
    samples = [Sample(row, int(label), f"{split}/{row}") for row, label in enumerate(labels)]
    info = {"hf_path": path, "split": split, "revision": revision, "num_classes": len(classes)}
    return LabeledImages("imagenet_hf", classes, samples, _image_reader(table, image_column), info)
