"""Map-style batches copied once into the order asked for: whole-brain rows are copied one by
one straight into their batch row, short rows gathered with one vectorised read; both paths,
with z-scoring, repeat averaging, float16 stores and DataLoader workers (whose batches are made
in shared memory), against nibabel's values."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from neurotorch.data.collate import collate_items
from neurotorch.data.fmri import betas as betas_module
from neurotorch.data.fmri.betas import BetasDataset
from neurotorch.fmri import layout

SUBJECT = "sub-01"
PATHS = {"row-by-row": 0, "gather": 1 << 40}  # the row length from which rows go one by one


@cache
def volumes(root: Path, session: str) -> np.ndarray:
    return np.asarray(nib.load(root / layout.session_betas(SUBJECT, session)).dataobj)


def expected_rows(root: Path, dataset: BetasDataset, zscore: bool) -> dict:
    """Betas of every (session, trial) from nibabel, z-scored within the session when asked."""
    rows = {}
    mask = dataset.voxel_mask()
    for session in ("ses-01", "ses-02"):
        values = volumes(root, session)[mask].T.astype(np.float64)
        if zscore:
            values = (values - values.mean(0)) / values.std(0)
        rows.update({(session, t): values[t] for t in range(len(values))})
    return rows


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "read",
    [{}, {"zscore": True}, {"dtype": "float16"}, {"zscore": True, "average_repeats": True}],
    ids=["raw", "zscore", "float16", "zscore-average"],
)
def test_a_batch_in_any_order_equals_nibabel(tiny_laion_root, monkeypatch, path, read):
    monkeypatch.setattr(betas_module, "_ROW_BY_ROW_BYTES", PATHS[path])
    dataset = BetasDataset(
        tiny_laion_root, SUBJECT, voxels={"roi": "all"}, features=None, read=read
    )
    rows = expected_rows(tiny_laion_root, dataset, read.get("zscore", False))
    order = np.random.default_rng(3).permutation(len(dataset))[:40]
    indices = np.concatenate([order, order[:5]])  # both sessions, shuffled, some twice
    batch = collate_items(dataset.__getitems__(indices.tolist()))
    assert batch["index"].tolist() == indices.tolist()
    tables = {
        s: pd.read_csv(tiny_laion_root / layout.session_trials(SUBJECT, s), sep="\t")
        for s in ("ses-01", "ses-02")
    }
    tolerance = {"rtol": 1e-3, "atol": 1e-3} if read.get("dtype") else {"rtol": 1e-5, "atol": 1e-5}
    for k, index in enumerate(indices):
        item = dataset.items.iloc[index]
        if read.get("average_repeats"):
            trials = [
                (s, t)
                for s, table in tables.items()
                for t in table.loc[table["label"] == item["image_name"], "beta_index"]
            ]
        else:
            trials = [(item["session"], int(item["trial"]))]
        expected = np.mean([rows[key] for key in trials], axis=0)
        np.testing.assert_allclose(batch["betas"][k].numpy(), expected, **tolerance)


@pytest.mark.slow
def test_workers_send_whole_brain_batches_in_the_order_asked_for(tiny_laion_root, monkeypatch):
    monkeypatch.setattr(betas_module, "_ROW_BY_ROW_BYTES", 0)  # forked workers inherit it
    dataset = BetasDataset(tiny_laion_root, SUBJECT, voxels={"roi": "all"}, features=None)
    rows = expected_rows(tiny_laion_root, dataset, zscore=False)
    loader = DataLoader(
        dataset,
        batch_size=16,
        shuffle=True,
        num_workers=2,
        collate_fn=collate_items,
        multiprocessing_context="fork",
    )
    seen = []
    for batch in loader:
        for k in range(len(batch["index"])):
            key = (batch["session"][k], int(batch["trial"][k]))
            np.testing.assert_array_equal(batch["betas"][k].numpy(), rows[key].astype(np.float32))
            seen.append(int(batch["index"][k]))
    assert sorted(seen) == list(range(len(dataset)))
