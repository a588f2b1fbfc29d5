"""Model loading: local checkpoints in every supported form, hub paths offline, and actionable errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from clipbench.checkpoints import read_state_dict, strip_module_prefix
from clipbench.errors import ModelLoadError
from clipbench.loading import ModelSpec, load_model
from clipbench.offline_model import OFFLINE_MODEL_CONFIG


def tiny_spec(path: Path, **overrides) -> ModelSpec:
    return ModelSpec("clipbench-tiny", checkpoint_path=str(path), device="cpu", **overrides)


def reference_state(offline_checkpoint) -> dict[str, torch.Tensor]:
    return read_state_dict(offline_checkpoint)


def same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    loaded = model.state_dict()
    return all(torch.equal(loaded[k].to(state[k].dtype), state[k]) for k in state)


def test_safetensors_checkpoint_loads(offline_checkpoint):
    loaded = load_model(tiny_spec(offline_checkpoint))
    assert not loaded.model.training
    assert loaded.weights_sha256 is not None and len(loaded.weights_sha256) == 64
    assert same_weights(loaded.model, reference_state(offline_checkpoint))
    assert loaded.parameter_counts["total"] == loaded.parameter_counts["image"] + loaded.parameter_counts["text"]


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth"])
def test_wrapped_torch_checkpoint_loads(tmp_path, offline_checkpoint, suffix):
    state = reference_state(offline_checkpoint)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / f"finetuned{suffix}"
    torch.save(wrapped, path)
    loaded = load_model(tiny_spec(path))
    assert same_weights(loaded.model, state)


def test_module_prefix_on_some_keys():
    state = {"module.visual.proj": torch.zeros(1), "logit_scale": torch.ones(1), "module.module.text.x": torch.ones(1)}
    cleaned = strip_module_prefix(state)
    assert set(cleaned) == {"visual.proj", "logit_scale", "text.x"}


def test_pickled_object_rejected(tmp_path, offline_checkpoint):
    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": reference_state(offline_checkpoint), "optimizer": Path("/tmp")}, path)
    with pytest.raises(ModelLoadError, match="weights_only=True") as info:
        load_model(tiny_spec(path))
    assert "unsafe.pt" in str(info.value)


def test_missing_checkpoint_named(tmp_path):
    with pytest.raises(ModelLoadError, match="checkpoint file not found"):
        load_model(tiny_spec(tmp_path / "absent.pt"))


def test_checkpoint_folder_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="is a folder"):
        load_model(tiny_spec(tmp_path))


def test_unsupported_suffix_rejected(tmp_path):
    path = tmp_path / "weights.ckpt"
    path.write_bytes(b"0")
    with pytest.raises(ModelLoadError, match="supported"):
        load_model(tiny_spec(path))


def test_corrupt_safetensors_rejected(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        load_model(tiny_spec(path))


def test_wrong_architecture_checkpoint(tmp_path, offline_checkpoint):
    state = reference_state(offline_checkpoint)
    state.pop("visual.proj")
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "mismatch.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelLoadError, match="does not match the architecture") as info:
        load_model(tiny_spec(path))
    assert "visual.proj" in str(info.value)


def test_unknown_architecture_suggests_names():
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec("ViT-B-31", pretrained="openai", device="cpu"))
    assert "ViT-B-32" in str(info.value)
    assert "unknown OpenCLIP architecture" in str(info.value)


def test_invalid_tag_lists_valid_tags():
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec("ViT-B-32", pretrained="laion5b", device="cpu"))
    assert "laion2b_s34b_b79k" in str(info.value)
    assert "openai" in str(info.value)


def test_no_weights_given_is_error():
    with pytest.raises(ModelLoadError, match="no weights given"):
        load_model(ModelSpec("ViT-B-32", pretrained=None, device="cpu"))


def test_uncached_weights_offline_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu", cache_dir=str(tmp_path)))
    message = str(info.value)
    assert "not in the local cache" in message
    assert str(tmp_path) in message
    assert "model.checkpoint" in message
    assert "HF_HUB_OFFLINE" in message


def test_fp16_on_cpu_rejected(offline_checkpoint):
    with pytest.raises(Exception, match="fp16 needs a GPU"):
        load_model(tiny_spec(offline_checkpoint, precision="fp16"))


def test_bf16_autocast_on_cpu(offline_checkpoint):
    loaded = load_model(tiny_spec(offline_checkpoint, precision="bf16"))
    assert next(loaded.model.parameters()).dtype == torch.float32


def write_hub_cache(cache_dir: Path, repo_id: str, offline_checkpoint: Path, preprocess: dict) -> None:
    """Lay out a Hugging Face hub cache entry as huggingface_hub writes it after a download."""
    revision = "0" * 40
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    config = {"model_cfg": json.loads(OFFLINE_MODEL_CONFIG.read_text()), "preprocess_cfg": preprocess}
    (snapshot / "open_clip_config.json").write_text(json.dumps(config))
    (snapshot / "open_clip_model.safetensors").write_bytes(offline_checkpoint.read_bytes())


def test_hf_hub_model_from_local_cache(tmp_path, monkeypatch, offline_checkpoint):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "resize_mode": "squash"}
    write_hub_cache(tmp_path, "clipbench/tiny-shapes", offline_checkpoint, preprocess)
    loaded = load_model(ModelSpec("hf-hub:clipbench/tiny-shapes", device="cpu", cache_dir=str(tmp_path)))
    assert same_weights(loaded.model, reference_state(offline_checkpoint))
    assert tuple(loaded.model.visual.preprocess_cfg["mean"]) == (0.5, 0.5, 0.5)
    assert loaded.weights_path.endswith("open_clip_model.safetensors")


def test_hf_hub_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local cache"):
        load_model(ModelSpec("hf-hub:clipbench/absent", device="cpu", cache_dir=str(tmp_path)))


@pytest.fixture(scope="module")
def mobileclip_checkpoint(tmp_path_factory) -> Path:
    """Random MobileCLIP-S1 weights standing in for a checkpoint fine-tuned from the datacompdr tag."""
    model = open_clip.create_model("MobileCLIP-S1", pretrained=None, pretrained_image=False, pretrained_text=False)
    path = tmp_path_factory.mktemp("mobileclip") / "finetuned.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"pretrained_tag": "datacompdr"})
    return path


@pytest.mark.slow
def test_checkpoint_uses_tag_preprocessing(mobileclip_checkpoint):
    loaded = load_model(ModelSpec("MobileCLIP-S1", pretrained="datacompdr", checkpoint_path=str(mobileclip_checkpoint),
                                  device="cpu"))
    tag = open_clip.get_pretrained_cfg("MobileCLIP-S1", "datacompdr")
    assert tuple(loaded.model.visual.preprocess_cfg["mean"]) == tuple(tag["mean"])
    assert loaded.model.visual.preprocess_cfg["interpolation"] == "bilinear"
    normalize = loaded.preprocess.transforms[-1]
    assert tuple(normalize.mean) == (0.0, 0.0, 0.0)
    assert tuple(normalize.std) == (1.0, 1.0, 1.0)


@pytest.mark.slow
def test_checkpoint_without_tag_uses_defaults(mobileclip_checkpoint):
    loaded = load_model(ModelSpec("MobileCLIP-S1", pretrained=None, checkpoint_path=str(mobileclip_checkpoint), device="cpu"))
    assert tuple(loaded.model.visual.preprocess_cfg["mean"]) == open_clip.OPENAI_DATASET_MEAN


@pytest.mark.slow
def test_siglip_tokenizer_offline_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None, pretrained_image=False, pretrained_text=False)
    path = tmp_path / "siglip.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec("ViT-B-16-SigLIP", pretrained="webli", checkpoint_path=str(path), device="cpu",
                             cache_dir=str(tmp_path)))
    assert "not in the local cache" in str(info.value)


@pytest.mark.slow
def test_quick_gelu_follows_tag(tmp_path):
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vit_b32.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))
    del model

    openai = load_model(ModelSpec("ViT-B-32", pretrained="openai", checkpoint_path=str(path), device="cpu"))
    assert type(openai.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    laion = load_model(ModelSpec("ViT-B-32", pretrained="laion2b_s34b_b79k", checkpoint_path=str(path), device="cpu"))
    assert type(laion.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(ModelSpec("ViT-B-32", pretrained="openai", checkpoint_path=str(path), device="cpu", quick_gelu=False))
    assert any("quick_gelu=False" in str(w.message) for w in caught)


def test_recorded_tag_mismatch_warns(tmp_path, offline_checkpoint):
    state = reference_state(offline_checkpoint)
    path = tmp_path / "tagged.safetensors"
    save_file(state, str(path), metadata={"pretrained_tag": "openai"})
    from clipbench.loading import _warn_on_checkpoint_tag_mismatch

    with pytest.warns(UserWarning, match="records base tag 'openai'"):
        _warn_on_checkpoint_tag_mismatch(ModelSpec("ViT-B-32", pretrained="laion2b_s34b_b79k"), path)


def test_junk_torch_checkpoint_rejected(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x00\x01junk")
    with pytest.raises(ModelLoadError, match="could not be read") as info:
        load_model(tiny_spec(path))
    assert "junk.pt" in str(info.value)


def test_checkpoint_of_other_architecture(offline_checkpoint):
    with pytest.raises(ModelLoadError, match="does not match the architecture ViT-B-32") as info:
        load_model(ModelSpec("ViT-B-32", checkpoint_path=str(offline_checkpoint), device="cpu"))
    assert "size mismatch" in str(info.value) or "missing keys" in str(info.value)
