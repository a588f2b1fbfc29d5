"""ImageNet-1k class metadata: OpenAI class names keyed by index and WordNet ID.

The OpenAI class-name list (OpenCLIP's ``IMAGENET_CLASSNAMES``) repeats two names
("missile" and "sunglasses" each name two different synsets), so classes are always keyed
by index or WordNet ID (``wnid``) and never by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from open_clip import IMAGENET_CLASSNAMES

from clipbench.errors import ConfigError


@dataclass(frozen=True)
class ClassIndex:
    """Ordered classes of a classification task: ``wnids[i]`` and ``classnames[i]`` are class i."""

    wnids: tuple[str, ...]
    classnames: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.wnids) != len(self.classnames):
            raise ConfigError(f"class index has {len(self.wnids)} ids but {len(self.classnames)} names")
        duplicates = sorted({w for w in self.wnids if self.wnids.count(w) > 1})
        if duplicates:
            raise ConfigError(f"class index repeats the class ids {duplicates[:5]}: each id must name one class")

    def __len__(self) -> int:
        return len(self.wnids)

    def index_of(self) -> dict[str, int]:
        """Map each class id to its index."""
        return {wnid: i for i, wnid in enumerate(self.wnids)}

    def subset(self, indices: list[int]) -> "ClassIndex":
        return ClassIndex(tuple(self.wnids[i] for i in indices), tuple(self.classnames[i] for i in indices))


def imagenet_wnids() -> tuple[str, ...]:
    """Return the 1000 ImageNet-1k WordNet IDs in label order (sorted, as timm ships them)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def imagenet_class_index() -> ClassIndex:
    """Return the ImageNet-1k classes with OpenAI's class names."""
    return ClassIndex(imagenet_wnids(), tuple(IMAGENET_CLASSNAMES))


def load_class_index(path: str | Path) -> ClassIndex:
    """Read a class index in the classic ``imagenet_class_index.json`` form.

    The file maps a string index to ``[wnid, class name]``: ``{"0": ["n01440764", "tench"], ...}``.
    Indices must run from 0 without gaps. Errors name the file and the offending key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class index file not found: {path}")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"class index {path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f'class index {path} must be a non-empty JSON object like {{"0": ["n01440764", "tench"]}}')

    entries: dict[int, tuple[str, str]] = {}
    for key, value in raw.items():
        if not (str(key).isascii() and str(key).isdigit()):
            raise ConfigError(f"class index {path}: key {key!r} is not a class index (expected \"0\", \"1\", ...)")
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v for v in value)):
            raise ConfigError(f"class index {path}: key {key!r} must map to [wnid, class name], got {value!r}")
        if int(key) in entries:
            raise ConfigError(f"class index {path}: key {key!r} repeats class index {int(key)}")
        entries[int(key)] = (value[0], value[1])

    missing = sorted(set(range(len(entries))) - set(entries))
    if missing:
        raise ConfigError(f"class index {path}: indices must run from 0 to {len(entries) - 1}; missing {missing[:5]}")
    ordered = [entries[i] for i in range(len(entries))]
    return ClassIndex(tuple(w for w, _ in ordered), tuple(n for _, n in ordered))


def resolve_class_index(path: str | Path | None) -> ClassIndex:
    """Return the class index at ``path``, or ImageNet-1k when no path is given."""
    return imagenet_class_index() if path is None else load_class_index(path)
