"""Model complexity: FLOP counting convention, analytic cross-checks and the per-architecture cache."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import torch

from clipbench import complexity as complexity_module
from clipbench.complexity import (
    ModelComplexity,
    count_forward_flops,
    measure_complexity,
    model_complexity,
)
from clipbench.loading import LoadedModel, ModelSpec, load_model

METRIC_KEYS = {"params_image_millions", "params_text_millions", "params_total_millions",
               "gflops_per_image", "gflops_per_text"}


def vit_image_gflops(image_size: int, patch_size: int, width: int, layers: int, embed_dim: int) -> float:
    """Estimate a ViT image tower's GFLOPs at 2 FLOPs per multiply-add.

    The estimate counts the patch embedding (one matrix product per patch) and the final
    projection of the class token. Each layer adds the four attention projections (4 w^2 per
    token), the MLP at 4x width (8 w^2 per token) and the two attention products (2 n^2 w).
    Normalisation, GELU and softmax are left out, as FlopCounterMode leaves them out.
    """
    patches = (image_size // patch_size) ** 2
    tokens = patches + 1
    patch_embedding = patches * 3 * patch_size**2 * width
    per_layer = tokens * 12 * width**2 + 2 * tokens**2 * width
    projection = width * embed_dim
    return 2 * (patch_embedding + layers * per_layer + projection) / 1e9


def text_gflops(context_length: int, width: int, layers: int, embed_dim: int) -> float:
    """Estimate a CLIP text tower's GFLOPs at 2 FLOPs per multiply-add (same terms as the ViT layers)."""
    per_layer = context_length * 12 * width**2 + 2 * context_length**2 * width
    projection = width * embed_dim
    return 2 * (layers * per_layer + projection) / 1e9


@pytest.fixture(scope="module")
def tiny(offline_checkpoint) -> LoadedModel:
    return load_model(ModelSpec("clipbench-tiny", checkpoint_path=str(offline_checkpoint), device="cpu"))


@pytest.fixture(scope="module")
def vit_b_32() -> LoadedModel:
    """ViT-B-32 with random weights, wrapped as a LoadedModel: FLOPs do not depend on the weights."""
    model = open_clip.create_model("ViT-B-32", pretrained=None, pretrained_image=False, pretrained_text=False).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return LoadedModel(ModelSpec("ViT-B-32", device="cpu"), model, lambda image: image, tokenizer,
                       torch.device("cpu"), None, None)


@pytest.fixture(scope="module")
def vit_b_32_complexity(vit_b_32) -> ModelComplexity:
    return measure_complexity(vit_b_32.model, vit_b_32.tokenizer)


def test_flops_linear_by_hand():
    layer = torch.nn.Linear(4, 3)
    inputs = torch.zeros(1, 4)

    flops = count_forward_flops(lambda: layer(inputs))

    # 4 x 3 multiply-adds, each counted as 2 FLOPs
    assert flops == 2 * 4 * 3


def test_flops_attention_by_hand():
    embed_dim, sequence_length = 8, 5
    attention = torch.nn.MultiheadAttention(embed_dim, num_heads=2, batch_first=True).eval()
    inputs = torch.zeros(1, sequence_length, embed_dim)

    flops = count_forward_flops(lambda: attention(inputs, inputs, inputs, need_weights=False))

    projections = 4 * sequence_length * embed_dim * embed_dim  # query, key, value and output
    attention_products = 2 * sequence_length * sequence_length * embed_dim  # q k^T and weights @ v
    assert flops == 2 * (projections + attention_products)


def test_flops_restores_mha_fastpath():
    before = torch.backends.mha.get_fastpath_enabled()

    count_forward_flops(lambda: torch.nn.Linear(2, 2)(torch.zeros(1, 2)))

    assert torch.backends.mha.get_fastpath_enabled() == before


def test_metrics_keys():
    complexity = ModelComplexity(1.0, 2.0, 3.0, 4.0, 5.0)

    metrics = complexity.as_metrics()

    assert set(metrics) == METRIC_KEYS
    assert metrics["gflops_per_text"] == 5.0


def test_tiny_params_match_loader(tiny):
    complexity = measure_complexity(tiny.model, tiny.tokenizer)

    assert complexity.params_total_millions == pytest.approx(tiny.parameter_counts["total"] / 1e6)
    assert complexity.params_image_millions == pytest.approx(tiny.parameter_counts["image"] / 1e6)
    assert complexity.params_text_millions == pytest.approx(tiny.parameter_counts["text"] / 1e6)


def test_tiny_image_gflops_plausible(tiny):
    # clipbench-tiny: 64 px images, 8 px patches (64 patches + class token), 4 layers of width 128
    estimate = vit_image_gflops(image_size=64, patch_size=8, width=128, layers=4, embed_dim=128)

    measured = measure_complexity(tiny.model, tiny.tokenizer).gflops_per_image

    assert measured > 0
    assert measured < 1.5 * estimate
    assert measured > estimate / 1.5


def test_tiny_text_gflops_plausible(tiny):
    # clipbench-tiny: 16 tokens, 4 layers of width 128
    estimate = text_gflops(context_length=16, width=128, layers=4, embed_dim=128)

    measured = measure_complexity(tiny.model, tiny.tokenizer).gflops_per_text

    assert measured > 0
    assert measured < 1.5 * estimate
    assert measured > estimate / 1.5


def test_vit_b_32_image_gflops(vit_b_32_complexity):
    # OpenCLIP's docs/model_profile.csv lists ViT-B-32 at 8.82 image GFLOPs (4.41 GMACs).
    estimate = vit_image_gflops(image_size=224, patch_size=32, width=768, layers=12, embed_dim=512)

    measured = vit_b_32_complexity.gflops_per_image

    assert measured == pytest.approx(8.8, rel=0.10)
    assert measured == pytest.approx(estimate, rel=0.10)


def test_vit_b_32_text_gflops(vit_b_32_complexity):
    # OpenCLIP's docs/model_profile.csv lists the ViT-B-32 text tower at 5.96 GFLOPs.
    estimate = text_gflops(context_length=77, width=512, layers=12, embed_dim=512)

    measured = vit_b_32_complexity.gflops_per_text

    assert measured == pytest.approx(5.96, rel=0.10)
    assert measured == pytest.approx(estimate, rel=0.10)


def test_vit_b_32_params(vit_b_32_complexity):
    # OpenCLIP's docs/model_profile.csv: 151.28 M parameters, 87.85 M of them in the image tower.
    assert vit_b_32_complexity.params_total_millions == pytest.approx(151.28, abs=0.01)
    assert vit_b_32_complexity.params_image_millions == pytest.approx(87.85, abs=0.01)


def cache_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "complexity").glob("*.json"))


def test_cache_second_call_reads_file(tiny, tmp_path, monkeypatch):
    first = model_complexity(tiny, tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("measure_complexity called although the entry is cached")

    monkeypatch.setattr(complexity_module, "measure_complexity", fail)
    second = model_complexity(tiny, tmp_path)

    assert second == first
    assert len(cache_files(tmp_path)) == 1


def test_cache_ignores_weights(tiny, tmp_path, monkeypatch):
    model_complexity(tiny, tmp_path)
    other_weights = replace(tiny, weights_path="/elsewhere/finetuned.safetensors", weights_sha256="0" * 64)

    monkeypatch.setattr(complexity_module, "measure_complexity", lambda *args: pytest.fail("measured again"))
    model_complexity(other_weights, tmp_path)

    assert len(cache_files(tmp_path)) == 1


def test_cache_per_architecture(tiny, vit_b_32, tmp_path):
    tiny_complexity = model_complexity(tiny, tmp_path)
    vit_complexity = model_complexity(vit_b_32, tmp_path)

    assert len(cache_files(tmp_path)) == 2
    assert vit_complexity.gflops_per_image > tiny_complexity.gflops_per_image


def test_cache_file_contents(tiny, tmp_path):
    complexity = model_complexity(tiny, tmp_path)

    stored = json.loads(cache_files(tmp_path)[0].read_text(encoding="utf-8"))

    assert stored["complexity"] == complexity.as_metrics()
    assert stored["key"]["model_name"] == "clipbench-tiny"
    assert stored["key"]["image_size"] == [64, 64]
    assert stored["key"]["context_length"] == 16
    assert stored["key"]["open_clip_version"] == open_clip.__version__


@pytest.mark.parametrize("content", ["{not json", "", '{"complexity": {"gflops_per_image": 1.0}}', "[]"])
def test_cache_corrupt_entry_recomputed(tiny, tmp_path, content):
    expected = model_complexity(tiny, tmp_path)
    path = cache_files(tmp_path)[0]
    path.write_text(content, encoding="utf-8")

    recomputed = model_complexity(tiny, tmp_path)

    assert recomputed == expected
    assert json.loads(path.read_text(encoding="utf-8"))["complexity"] == expected.as_metrics()


def test_cache_disabled_writes_nothing(tiny, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("CLIPBENCH_CACHE_DIR", str(cache_dir))

    complexity = model_complexity(tiny, None)

    assert complexity.gflops_per_image > 0
    assert not cache_dir.exists()
