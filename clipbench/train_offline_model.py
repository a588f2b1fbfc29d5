"""Train the offline default model on generated `shapes` captions.

Run ``python -m clipbench.train_offline_model`` to rebuild the committed checkpoint. The
run is seeded; on 2 CPU cores it takes about ten minutes (docs/benchmarks.md). Training is ordinary CLIP
contrastive learning, except that captions of the same class in one batch count as
positives of each other (a batch of 64 from 24 classes always contains repeats).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from safetensors.torch import save_file

from clipbench.data.shapes import ShapesDataset
from clipbench.offline_model import OFFLINE_CHECKPOINT, OFFLINE_MODEL_NAME, register_offline_model_config

log = logging.getLogger(__name__)

TRAIN_SEED = 1
HELD_OUT_SEED = 2
TEMPLATES = list(OPENAI_IMAGENET_TEMPLATES) + list(SIMPLE_IMAGENET_TEMPLATES)


def _set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _image_batch(dataset: ShapesDataset, indices, preprocess) -> torch.Tensor:
    return torch.stack([preprocess(dataset.image(int(i))) for i in indices])


def _caption_batch(dataset: ShapesDataset, indices, rng: random.Random) -> list[str]:
    captions = []
    for index in indices:
        classname = dataset.classnames[dataset.label(int(index))]
        if rng.random() < 0.2:
            captions.append(dataset.caption(int(index)))
        else:
            captions.append(rng.choice(TEMPLATES)(classname))
    return captions


def multi_positive_clip_loss(image_features, text_features, labels, logit_scale) -> torch.Tensor:
    """Symmetric CLIP loss whose targets spread evenly over same-class pairs."""
    logits = logit_scale * image_features @ text_features.T
    same_class = (labels[:, None] == labels[None, :]).float()
    targets = same_class / same_class.sum(dim=1, keepdim=True)
    image_loss = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_loss = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (image_loss + text_loss) / 2


@torch.no_grad()
def held_out_top1(model, tokenizer, preprocess, images_per_class: int) -> float:
    """Zero-shot top-1 on held-out shapes with OpenCLIP's classifier and the 80 OpenAI templates."""
    model.eval()
    dataset = ShapesDataset(images_per_class=images_per_class, seed=HELD_OUT_SEED)
    classifier = open_clip.build_zero_shot_classifier(
        model, tokenizer, dataset.classnames, OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=None
    )
    correct = 0
    for start in range(0, len(dataset), 128):
        indices = range(start, min(start + 128, len(dataset)))
        image_features = model.encode_image(_image_batch(dataset, indices, preprocess), normalize=True)
        predictions = (image_features @ classifier).argmax(dim=1)
        labels = torch.tensor([dataset.label(i) for i in indices])
        correct += int((predictions == labels).sum())
    model.train()
    return correct / len(dataset)


def train(steps: int, batch_size: int, learning_rate: float, output: Path, threads: int) -> float:
    torch.set_num_threads(threads)
    _set_seeds(0)
    register_offline_model_config()
    model, _, preprocess = open_clip.create_model_and_transforms(OFFLINE_MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(OFFLINE_MODEL_NAME)
    model.train()

    dataset = ShapesDataset(images_per_class=100_000, seed=TRAIN_SEED)
    caption_rng = random.Random(0)
    index_rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    warmup_steps = max(steps // 20, 1)

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return learning_rate * (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(steps - warmup_steps, 1)
        return learning_rate * 0.5 * (1 + math.cos(math.pi * progress))

    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)

        indices = index_rng.integers(0, len(dataset), size=batch_size)
        images = _image_batch(dataset, indices, preprocess)
        texts = tokenizer(_caption_batch(dataset, indices, caption_rng))
        labels = torch.tensor([dataset.label(int(i)) for i in indices])

        image_features, text_features, logit_scale = model(images, texts)
        loss = multi_positive_clip_loss(image_features, text_features, labels, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

        if step % 50 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.4f lr %.2e elapsed %.0f s",
                     step + 1, steps, loss.item(), lr_at(step), time.perf_counter() - started)

    top1 = held_out_top1(model, tokenizer, preprocess, images_per_class=20)
    log.info("held-out zero-shot top-1: %.3f after %.0f s", top1, time.perf_counter() - started)

    state_dict = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(output), metadata={
        "architecture": OFFLINE_MODEL_NAME,
        "training_steps": str(steps),
        "held_out_top1": f"{top1:.4f}",
    })
    log.info("Saved %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1400, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="image-caption pairs per step")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=OFFLINE_CHECKPOINT, help="safetensors file to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train(args.steps, args.batch_size, args.learning_rate, args.output, args.threads)


if __name__ == "__main__":
    main()
