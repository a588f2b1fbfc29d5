"""Real input: an ImageNet-layout folder of real photographs, evaluated end to end by `clipbench eval`."""

from __future__ import annotations

import shutil

import pytest
from mlflow import MlflowClient

from clipbench.classes import imagenet_class_index
from test_cli import FAST, run_cli

# Photographs shipped in installed wheels, each with the ImageNet class that fits it.
PHOTO_LABELS = {
    "grace_hopper": "military uniform",
    "chelsea": "tabby cat",
    "coffee": "espresso",
    "rocket": "missile",
    "astronaut": "space shuttle",
    "motorcycle": "moped",
}


def wnid_for(classname: str) -> str:
    index = imagenet_class_index()
    return index.wnids[index.classnames.index(classname)]


@pytest.mark.slow
def test_eval_on_real_photos(tmp_path, sample_photos, tracking_uri):
    root = tmp_path / "imagenet_val"
    for name, classname in PHOTO_LABELS.items():
        folder = root / wnid_for(classname)
        folder.mkdir(parents=True, exist_ok=True)
        source = sample_photos[name]
        shutil.copy(source, folder / f"{name}{source.suffix}")

    completed = run_cli(["eval", "dataset=imagenet_folder", f"dataset.root={root}", "dataset.class_scope=subset",
                         "tracking.experiment=real-photos", *FAST], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("real-photos")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset"] == "imagenet_folder"
    assert run.data.params["class_scope"] == "subset"
    assert run.data.params["num_classes"] == str(len(PHOTO_LABELS))
    assert run.data.metrics["num_images"] == len(PHOTO_LABELS)
    assert run.data.metrics["skipped_images"] == 0
    assert 0.0 <= run.data.metrics["top1"] <= 1.0
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert "predictions.csv" in artifacts

