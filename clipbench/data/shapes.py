"""Generated `shapes` data set: coloured shapes on varied backgrounds, with captions.

Every image is a pure function of (seed, index), so two runs with the same seed see the
same pixels on any machine. The data set also writes itself to disk in the ImageNet
validation layout (``root/<class id>/*.JPEG`` plus a class-index JSON), which is how the
folder loaders are exercised without ImageNet.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

COLOURS_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 210, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
IMAGE_SIZE_PX = 128


@dataclass(frozen=True)
class ShapeClass:
    """One class of the data set: a colour and a shape."""

    class_id: str
    classname: str
    colour: str
    shape: str


def shape_classes() -> list[ShapeClass]:
    """Return the 24 classes in label order (colour-major)."""
    classes = []
    for colour in COLOURS_RGB:
        for shape in SHAPES:
            classes.append(ShapeClass(f"{colour}_{shape}", f"{colour} {shape}", colour, shape))
    return classes


def _polygon(center: tuple[float, float], radius: float, angle: float, points: Sequence[tuple[float, float]]):
    """Rotate and scale unit-circle polar points (radius factor, angle) around a centre."""
    cx, cy = center
    return [
        (cx + radius * r * math.cos(a + angle), cy + radius * r * math.sin(a + angle))
        for r, a in points
    ]


def _shape_outline(shape: str) -> list[tuple[float, float]]:
    if shape == "square":
        return [(math.sqrt(2) * 0.75, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    if shape == "triangle":
        return [(1.0, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    if shape == "star":
        return [(1.0 if k % 2 == 0 else 0.42, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    if shape == "cross":
        arm = 0.32
        corners = [(arm, 1), (arm, arm), (1, arm), (1, -arm), (arm, -arm), (arm, -1),
                   (-arm, -1), (-arm, -arm), (-1, -arm), (-1, arm), (-arm, arm), (-arm, 1)]
        return [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    raise ValueError(f"no outline for shape {shape!r}")


def _background(rng: np.random.Generator, size_px: int) -> Image.Image:
    """Draw a low-saturation gradient with noise, so colour and shape carry the label."""
    start = rng.uniform(60, 200, size=3)
    end = np.clip(start + rng.uniform(-60, 60, size=3), 0, 255)
    grey_pull = rng.uniform(0.5, 0.9)
    start = grey_pull * start.mean() + (1 - grey_pull) * start
    end = grey_pull * end.mean() + (1 - grey_pull) * end

    ramp = np.linspace(0.0, 1.0, size_px)[:, None, None]
    gradient = start + (end - start) * ramp
    pixels = np.broadcast_to(gradient, (size_px, size_px, 3)).copy()
    if rng.random() < 0.5:
        pixels = pixels.transpose(1, 0, 2)
    pixels += rng.normal(0, rng.uniform(2, 14), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def render_shape_image(shape_class: ShapeClass, rng: np.random.Generator, size_px: int = IMAGE_SIZE_PX) -> Image.Image:
    """Render one image of a class: random background, position, size, rotation and tint."""
    image = _background(rng, size_px)
    draw = ImageDraw.Draw(image)

    radius = rng.uniform(0.22, 0.38) * size_px
    margin = radius * 1.05
    center = (rng.uniform(margin, size_px - margin), rng.uniform(margin, size_px - margin))
    angle = rng.uniform(0, 2 * math.pi)
    tint = np.array(COLOURS_RGB[shape_class.colour], dtype=float) + rng.normal(0, 12, size=3)
    fill = tuple(int(v) for v in np.clip(tint, 0, 255))

    cx, cy = center
    bbox = [cx - radius, cy - radius, cx + radius, cy + radius]
    if shape_class.shape == "circle":
        draw.ellipse(bbox, fill=fill)
    elif shape_class.shape == "ring":
        band_px = int(radius * rng.uniform(0.35, 0.55))
        draw.ellipse(bbox, outline=fill, width=max(band_px, 2))
    else:
        draw.polygon(_polygon(center, radius, angle, _shape_outline(shape_class.shape)), fill=fill)

    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.2)))
    return image


class ShapesDataset:
    """Deterministic captioned shapes: item ``i`` is (PIL image, label, caption).

    ``images_per_class`` images of each class are generated, interleaved by class so that a
    prefix of the data set is balanced. Different ``seed`` values give disjoint draws, which
    is how the training and held-out evaluation splits are kept apart.
    """

    def __init__(self, images_per_class: int = 50, seed: int = 0, size_px: int = IMAGE_SIZE_PX):
        if images_per_class < 1:
            raise ValueError(f"images_per_class must be at least 1, got {images_per_class}")
        self.classes = shape_classes()
        self.classnames = [c.classname for c in self.classes]
        self.class_ids = [c.class_id for c in self.classes]
        self.images_per_class = images_per_class
        self.seed = seed
        self.size_px = size_px

    def __len__(self) -> int:
        return self.images_per_class * len(self.classes)

    def label(self, index: int) -> int:
        return index % len(self.classes)

    def caption(self, index: int) -> str:
        shape_class = self.classes[self.label(index)]
        return f"a {shape_class.classname} on a plain background"

    def image(self, index: int) -> Image.Image:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        rng = np.random.default_rng([self.seed, index])
        return render_shape_image(self.classes[self.label(index)], rng, self.size_px)

    def __getitem__(self, index: int) -> tuple[Image.Image, int, str]:
        return self.image(index), self.label(index), self.caption(index)

    def write_imagenet_folder(self, root: str | Path) -> Path:
        """Write the images as ``root/<class id>/<id>_<index>.JPEG`` plus ``class_index.json``.

        The JSON has the classic ``{"0": ["<class id>", "<class name>"], ...}`` form, so the
        folder loads with the ImageNet folder loader by passing that file as class index.
        """
        root = Path(root)
        for shape_class in self.classes:
            (root / shape_class.class_id).mkdir(parents=True, exist_ok=True)

        for index in range(len(self)):
            shape_class = self.classes[self.label(index)]
            path = root / shape_class.class_id / f"{shape_class.class_id}_{index:06d}.JPEG"
            self.image(index).save(path, format="JPEG", quality=92)

        class_index = {str(i): [c.class_id, c.classname] for i, c in enumerate(self.classes)}
        (root / "class_index.json").write_text(json.dumps(class_index, indent=1))
        log.info("Wrote %d shapes images to %s", len(self), root)
        return root
