"""``predict_part`` on every shipped DataModule: ``predict`` runs on the part the user names.

Each module's parts are told apart by something fixed outside the module: the lengths the user
gave (prime, all different), the split file's training images and the trials tables, the
subjects of the seeded partition, the run files of each part.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from neurotorch.lightning import (
    CalibrationDataModule,
    CalibrationRunsDataModule,
    ConnectomeDataModule,
    LaionFMRIDataModule,
    SensorSimDataModule,
)

PARTS = ("train", "val", "test")
LENGTHS = {"train": 11, "val": 7, "test": 5}
SMALL_LEADFIELD = {"retrieve_mode": "random", "n_sensors": 12, "n_sources": 16}


def predicted(dm, key: str) -> list:
    dm.setup("predict")
    return [value for batch in dm.predict_dataloader() for value in batch[key]]


@pytest.mark.parametrize("module", [SensorSimDataModule, CalibrationDataModule])
@pytest.mark.parametrize("part", PARTS)
def test_simulated_modules_predict_the_named_part(module, part):
    dm = module(
        leadfield=SMALL_LEADFIELD,
        nnz=(2,),
        alpha=(0.5,),
        **{f"{p}_length": n for p, n in LENGTHS.items()},
        batch_size=3,
        predict_part=part,
    )
    assert len(predicted(dm, "y")) == LENGTHS[part]


def test_the_default_predict_part_is_the_test_part():
    lengths = {f"{p}_length": n for p, n in LENGTHS.items()}
    dm = SensorSimDataModule(leadfield=SMALL_LEADFIELD, nnz=(2,), alpha=(0.5,), **lengths)
    assert len(predicted(dm, "y")) == LENGTHS["test"]


@pytest.mark.parametrize("part", PARTS)
def test_the_connectome_module_predicts_the_subjects_of_the_named_part(part):
    dm = ConnectomeDataModule(predict_part=part, batch_size=2)
    dm.setup("predict")
    expected = [dm.batches.subject_ids[i] for i in dm.subject_splits()[part]]
    assert sorted(predicted(dm, "subject")) == sorted(expected)


@pytest.mark.slow
def test_the_runs_module_predicts_the_runs_of_the_named_part(tmp_path):
    from neurotorch.synthetic.meeg import make_calibrain

    folder = make_calibrain(tmp_path / "cb", size="tiny", progress=False) / "posterior_summaries"
    runs = {}
    for part in PARTS:
        dm = CalibrationRunsDataModule(str(folder), batch_size=2, predict_part=part)
        runs[part] = sorted(zip(predicted(dm, "run_id"), predicted(dm, "seed"), strict=True))
    files = sorted(folder.glob("posterior_summary_run*_seed*.h5"))
    served = [(int(run), int(seed)) for part in PARTS for run, seed in runs[part]]
    on_disk = [
        (int(f.stem.split("_run")[1].split("_")[0]), int(f.stem.split("_seed")[1])) for f in files
    ]
    assert sorted(served) == sorted(on_disk)  # each run file in exactly one part
    assert all(runs[part] for part in PARTS)


def test_the_laion_module_predicts_the_trials_of_the_named_part(tiny_laion_root):
    """val and train predict the split's training images (the trials tables' trials of them),
    disjoint by image; test its test images."""
    split = json.loads((tiny_laion_root / "splits" / "shared" / "random_0.json").read_text())
    variant = split["variants"][0]
    tables = (tiny_laion_root / "derivatives").rglob(
        "sub-01_ses-*_desc-SingletrialBetas_trials.tsv"
    )
    shown = Counter(label for t in tables for label in pd.read_csv(t, sep="\t")["label"])
    names = {}
    for part in PARTS:
        dm = LaionFMRIDataModule(
            str(tiny_laion_root),
            voxels={"roi": "FFA1"},
            batch_size=16,
            predict_part=part,
        )
        names[part] = Counter(predicted(dm, "image_name"))
    training = {image: n for image, n in shown.items() if image in set(variant["train_ids"])}
    assert names["train"] + names["val"] == Counter(training)
    assert names["val"] and not set(names["val"]) & set(names["train"])
    test = {image: n for image, n in shown.items() if image in set(variant["test_ids"])}
    assert names["test"] == Counter(test)
