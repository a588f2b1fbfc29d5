"""Real photographs shipped inside installed wheels, for offline demos and tests.

matplotlib ships ``grace_hopper.jpg``; scikit-image ships several photos under
``skimage/data``. Each entry carries the ImageNet class that fits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SamplePhoto:
    """A photograph on disk and the ImageNet class name that describes it."""

    name: str
    path: Path
    imagenet_classname: str


def _matplotlib_sample(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _skimage_sample(name: str) -> Path | None:
    try:
        import skimage
    except ImportError:
        return None
    return Path(skimage.__file__).parent / "data" / name


def sample_photos() -> dict[str, SamplePhoto]:
    """Return the available sample photos by name (scikit-image's need ``pip install scikit-image``)."""
    candidates = [
        ("grace_hopper", _matplotlib_sample("grace_hopper.jpg"), "military uniform"),
        ("chelsea", _skimage_sample("chelsea.png"), "tabby cat"),
        ("coffee", _skimage_sample("coffee.png"), "espresso"),
        ("rocket", _skimage_sample("rocket.jpg"), "missile"),
        ("astronaut", _skimage_sample("astronaut.png"), "space shuttle"),
        ("motorcycle", _skimage_sample("motorcycle_left.png"), "moped"),
    ]
    return {name: SamplePhoto(name, path, classname)
            for name, path, classname in candidates if path is not None and path.is_file()}
