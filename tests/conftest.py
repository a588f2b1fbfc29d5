"""Shared fixtures: offline environment, per-test MLflow stores, the offline model, real photos."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

# No test may reach a hub: weights and data sets come from the project or the installed wheels.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Notebooks run by nbmake get no fixtures, so the session-wide stores are set here: nothing a
# test runs writes to the repository's mlruns/, outputs/ or the user's cache.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="clipbench-tests-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlruns' / 'mlflow.db'}"
os.environ["CLIPBENCH_CACHE_DIR"] = str(_SESSION_DIR / "cache")
os.environ["CLIPBENCH_OUTPUT_DIR"] = str(_SESSION_DIR / "outputs")
(_SESSION_DIR / "mlruns").mkdir()

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = Path(__file__).resolve().parent / "data" / "cases"
REJECTED_CASES = ("truncated.jpg", "zero_bytes.jpg", "not_an_image.jpg", "bomb_20000x20000.png")
ACCEPTED_CASES = ("cmyk.jpg", "palette_transparency.png", "one_pixel.png", "extreme_aspect.png",
                  "animated.gif", "photo.webp")


@pytest.fixture(scope="session", autouse=True)
def session_dir() -> Iterator[Path]:
    """Remove the session's stores when the run ends."""
    yield _SESSION_DIR
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def tracking_uri(tmp_path, monkeypatch) -> str:
    """Point MLflow at an SQLite store inside the test's folder, never the repository's mlruns/."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def offline_checkpoint() -> Path:
    from clipbench.offline_model import OFFLINE_CHECKPOINT

    assert OFFLINE_CHECKPOINT.is_file(), f"offline checkpoint missing: {OFFLINE_CHECKPOINT}"
    return OFFLINE_CHECKPOINT


@pytest.fixture(scope="session")
def tiny_manager(offline_checkpoint):
    """An initialized manager around the offline model, with the ImageNet-1k classes as default labels."""
    from clipbench import CLIPModelManager

    manager = CLIPModelManager("clipbench-tiny", pretrained=None, model_path=str(offline_checkpoint),
                               device="cpu", templates="simple")
    manager.initialize()
    return manager


def sample_photo_paths() -> dict[str, Path]:
    """Real photographs shipped inside installed wheels (matplotlib and scikit-image)."""
    import matplotlib
    import skimage

    mpl_data = Path(matplotlib.get_data_path()) / "sample_data"
    skimage_data = Path(skimage.__file__).parent / "data"
    return {
        "grace_hopper": mpl_data / "grace_hopper.jpg",
        "chelsea": skimage_data / "chelsea.png",
        "coffee": skimage_data / "coffee.png",
        "rocket": skimage_data / "rocket.jpg",
        "astronaut": skimage_data / "astronaut.png",
        "motorcycle": skimage_data / "motorcycle_left.png",
    }


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, Path]:
    photos = sample_photo_paths()
    for name, path in photos.items():
        assert path.is_file(), f"sample photo {name} missing at {path}"
    return photos


@pytest.fixture
def case_file():
    def path(name: str) -> Path:
        return CASES_DIR / name

    return path


@pytest.fixture
def compose_config():
    """Compose the Hydra configuration with overrides, as the CLI does, and clear Hydra afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from clipbench.config import register_resolvers

    register_resolvers()

    def compose_with(overrides: list[str]):
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)

    yield compose_with
    GlobalHydra.instance().clear()


def copy_cases(names, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(CASES_DIR / name, target / name)) for name in names]
