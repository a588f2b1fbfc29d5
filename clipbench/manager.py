"""``CLIPModelManager``: load a CLIP model once and serve single-image requests.

This is the request path that the notebook widgets call: image bytes in, unit-norm
features, label scores or a cosine similarity out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from clipbench.classes import ClassIndex, resolve_class_index
from clipbench.devices import autocast, model_dtype
from clipbench.errors import ClipbenchError, ModelLoadError
from clipbench.images import load_image
from clipbench.loading import LoadedModel, ModelSpec, load_model
from clipbench.prompts import PromptSet, load_prompt_set
from clipbench.zero_shot import build_classifier

log = logging.getLogger(__name__)


def check_labels(target_labels: Sequence[str]) -> list[str]:
    """Return the stripped candidate labels, or raise ValueError for a string, blanks or repeats."""
    if isinstance(target_labels, (str, bytes)):
        raise ValueError(f"target_labels must be a list of labels, not one string: use [{target_labels!r}]")
    labels = [str(label).strip() for label in target_labels]
    if not labels or any(not label for label in labels):
        raise ValueError(f"target_labels must be a non-empty list of non-empty labels, got {list(target_labels)!r}")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"target_labels repeats {repeated}: each candidate label must appear once")
    return labels


class CLIPModelManager:
    """Load a CLIP model once and serve image/text encoding, classification and similarity.

    ``pretrained`` names an OpenCLIP tag. When ``model_path`` is given, nothing is downloaded
    and ``pretrained`` only selects the tag whose preprocessing (and QuickGELU setting) the
    checkpoint was fine-tuned with. ``imagenet_classes_path`` is a classic
    ``imagenet_class_index.json``; without it the 1000 ImageNet classes with OpenAI's names
    are used.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        model_path: str | None = None,
        imagenet_classes_path: str | None = None,
        *,
        device: str = "auto",
        precision: str = "fp32",
        templates: str | Sequence[str] = "simple",
        cache_dir: str | Path | None = None,
        max_image_pixels: int | None = None,
        quick_gelu: bool | None = None,
        hub_cache_dir: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.pretrained = pretrained
        self.model_path = model_path
        self.imagenet_classes_path = imagenet_classes_path
        self.requested_device = device
        self.precision = precision
        self.cache_dir = cache_dir
        self.max_image_pixels = max_image_pixels
        self.quick_gelu = quick_gelu
        self.hub_cache_dir = hub_cache_dir
        self.prompt_set: PromptSet = (
            load_prompt_set(templates) if isinstance(templates, str) else load_prompt_set("custom", templates=templates)
        )

        self.model: torch.nn.Module | None = None
        self.preprocess = None
        self.tokenizer = None
        self.device: torch.device | None = None
        self.load_time: float | None = None
        self.is_loaded = False
        self.loaded: LoadedModel | None = None
        self.class_index: ClassIndex | None = None
        self.imagenet_labels: list[str] = []
        self.text_descriptions: list[str] = []
        self._imagenet_text_features: torch.Tensor | None = None
        self._label_text_features: dict[str, torch.Tensor] = {}

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, class_index: ClassIndex, prompt_set: PromptSet,
                    classifier: torch.Tensor | None = None, max_image_pixels: int | None = None) -> "CLIPModelManager":
        """Wrap an already loaded model, with ``class_index`` as the default candidate classes."""
        spec = loaded.spec
        manager = cls(spec.model_name, spec.pretrained, spec.checkpoint_path, device=spec.device,
                      precision=spec.precision, templates=list(prompt_set.templates),
                      max_image_pixels=max_image_pixels, quick_gelu=spec.quick_gelu)
        manager.prompt_set = prompt_set
        manager._attach(loaded, class_index)
        manager._imagenet_text_features = classifier
        return manager

    def _attach(self, loaded: LoadedModel, class_index: ClassIndex) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.preprocess = loaded.preprocess
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.load_time = loaded.load_time_s
        self.class_index = class_index
        self.imagenet_labels = list(class_index.classnames)
        self.text_descriptions = [self.prompt_set.templates[0].format(name) for name in self.imagenet_labels]
        self._imagenet_text_features = None
        self._label_text_features = {}
        self.is_loaded = True

    def initialize(self) -> None:
        """Load the model and the class names; raise ModelLoadError (a RuntimeError) with the cause on failure."""
        spec = ModelSpec(
            model_name=self.model_name, pretrained=self.pretrained, checkpoint_path=self.model_path,
            device=self.requested_device, precision=self.precision, quick_gelu=self.quick_gelu,
            cache_dir=self.hub_cache_dir,
        )
        try:
            loaded = load_model(spec)
            class_index = resolve_class_index(self.imagenet_classes_path)
        except ClipbenchError as err:
            raise ModelLoadError(f"Failed to initialize {self.model_name}: {err}") from err
        self._attach(loaded, class_index)

    def set_templates(self, templates: str | Sequence[str]) -> None:
        """Switch the prompt templates (a named set or a list); cached text features are rebuilt on next use."""
        self.prompt_set = (
            load_prompt_set(templates) if isinstance(templates, str) else load_prompt_set("custom", templates=templates)
        )
        self._imagenet_text_features = None
        self._label_text_features = {}
        if self.is_loaded:
            self.text_descriptions = [self.prompt_set.templates[0].format(name) for name in self.imagenet_labels]

    def _require_loaded(self) -> LoadedModel:
        if not self.is_loaded or self.loaded is None:
            raise RuntimeError("Model is not initialized: call initialize() first")
        return self.loaded

    def image_tensor(self, image_bytes: bytes, name: str | None = None) -> torch.Tensor:
        """Decode and preprocess one image into a batch of one on the model's device."""
        loaded = self._require_loaded()
        image = load_image(image_bytes, name=name, max_pixels=self.max_image_pixels)
        return loaded.preprocess(image).unsqueeze(0).to(loaded.device, dtype=model_dtype(loaded.model))

    @torch.inference_mode()
    def _image_features(self, image_bytes: bytes, name: str | None = None) -> torch.Tensor:
        loaded = self._require_loaded()
        pixels = self.image_tensor(image_bytes, name)
        with autocast(loaded.device, self.precision):
            features = loaded.model.encode_image(pixels, normalize=True)
        return features.float()

    @torch.inference_mode()
    def _text_features(self, texts: Sequence[str]) -> torch.Tensor:
        loaded = self._require_loaded()
        tokens = loaded.tokenizer(list(texts)).to(loaded.device)
        with autocast(loaded.device, self.precision):
            features = loaded.model.encode_text(tokens, normalize=True)
        return features.float()

    def encode_image(self, image_bytes: bytes, name: str | None = None) -> np.ndarray:
        """Return the unit-norm image embedding (1-D float32)."""
        return self._image_features(image_bytes, name)[0].cpu().numpy()

    def encode_text(self, text: str) -> np.ndarray:
        """Return the unit-norm text embedding (1-D float32) of the raw text, without templates."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string, got {text!r}")
        return self._text_features([text])[0].cpu().numpy()

    def imagenet_text_features(self) -> torch.Tensor:
        """Return the class-index classifier ``(embed_dim, num_classes)``, built once per model."""
        loaded = self._require_loaded()
        if self._imagenet_text_features is None:
            self._imagenet_text_features = build_classifier(
                loaded, self.imagenet_labels, self.prompt_set, cache_dir=self._feature_cache_dir(),
            )
        return self._imagenet_text_features

    def _feature_cache_dir(self) -> Path:
        from clipbench.feature_cache import default_cache_dir

        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    def label_text_features(self, labels: Sequence[str]) -> torch.Tensor:
        """Return prompt-ensemble features ``(embed_dim, len(labels))``; each label is encoded once per model."""
        loaded = self._require_loaded()
        new_labels = [label for label in dict.fromkeys(labels) if label not in self._label_text_features]
        if new_labels:
            weights = build_classifier(loaded, new_labels, self.prompt_set, cache_dir=None)
            for column, label in enumerate(new_labels):
                self._label_text_features[label] = weights[:, column]
        return torch.stack([self._label_text_features[label] for label in labels], dim=1)

    def classify_image_with_labels(
        self, image_bytes: bytes, target_labels: Sequence[str] | None = None, top_k: int = 3, name: str | None = None,
    ) -> list[tuple[str, float]]:
        """Score an image against candidate labels (the class index when None).

        Scores are softmax probabilities over the candidates of ``logit_scale * cosine``;
        the result is the ``top_k`` best as (label, probability), best first.
        """
        loaded = self._require_loaded()
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer of at least 1, got {top_k!r}")
        if target_labels is None:
            labels = self.imagenet_labels
            text_features = self.imagenet_text_features()
        else:
            labels = check_labels(target_labels)
            text_features = self.label_text_features(labels)

        image_features = self._image_features(image_bytes, name)
        with torch.inference_mode():
            logit_scale = loaded.model.logit_scale.exp().float()
            probabilities = (logit_scale * image_features @ text_features).softmax(dim=-1)[0]
        scores, indices = probabilities.topk(min(top_k, len(labels)))
        return [(labels[i], float(s)) for s, i in zip(scores.tolist(), indices.tolist())]

    def compute_similarity(self, image_bytes: bytes, text: str, name: str | None = None) -> float:
        """Return the cosine similarity between the image and the raw text."""
        image_features = self._image_features(image_bytes, name)
        text_features = torch.from_numpy(self.encode_text(text)).to(image_features.device)
        return float(image_features[0] @ text_features)

    def get_model_info(self) -> dict[str, object]:
        """Describe the loaded model: names, device, precision, load time and sizes."""
        info: dict[str, object] = {
            "model_name": self.model_name,
            "pretrained": self.pretrained,
            "model_path": self.model_path,
            "is_loaded": self.is_loaded,
            "device": str(self.device) if self.device is not None else None,
            "precision": self.precision,
            "load_time": self.load_time,
            "num_imagenet_classes": len(self.imagenet_labels),
            "templates": self.prompt_set.name,
            "num_templates": len(self.prompt_set.templates),
        }
        if self.loaded is not None:
            info["load_phases_s"] = dict(self.loaded.load_phases_s)
            info["parameter_count"] = self.loaded.parameter_counts["total"]
            info["parameter_counts"] = dict(self.loaded.parameter_counts)
            info["weights_sha256"] = self.loaded.weights_sha256
        return info
