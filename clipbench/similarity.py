"""Image-text similarity studies: cosine similarity matrices between images and texts."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from clipbench.manager import CLIPModelManager


def similarity_matrix(manager: CLIPModelManager, images: Sequence[bytes], texts: Sequence[str],
                      image_names: Sequence[str] | None = None) -> np.ndarray:
    """Return cosine similarities of shape ``(len(images), len(texts))``.

    Each image and each text is encoded once. ``image_names`` label the images in error
    messages (an upload's file name, say).
    """
    if not images:
        raise ValueError("no images given: add at least one image")
    cleaned_texts = [text.strip() for text in texts]
    if not cleaned_texts or any(not text for text in cleaned_texts):
        raise ValueError(f"texts must be a non-empty list of non-empty strings, got {list(texts)!r}")

    names = list(image_names) if image_names is not None else [None] * len(images)
    image_features = np.stack([manager.encode_image(image, name=name) for image, name in zip(images, names)])
    text_features = np.stack([manager.encode_text(text) for text in cleaned_texts])
    return image_features @ text_features.T
