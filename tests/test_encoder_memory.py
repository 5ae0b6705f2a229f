"""The encoder's memory preflight on the user's path: `LinearEncoder` in a Lightning fit plans its
voxel chunks from the data module's sizes before the first batch, refuses a fit that would not fit
with `EncoderMemoryError` (voxel count, estimate, the chunk to use), and the chunk it names gives
the fit of the brute-force reference; the available memory is read from ``/proc/meminfo`` and the
tightest cgroup limit (hand-written files)."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from encoder_helpers import split_arrays
from ridge_reference import reference_fit

from neurotorch.errors import CacheError, EncoderMemoryError
from neurotorch.lightning import LaionFMRIDataModule
from neurotorch.models import LinearEncoder, encoder_memory, held_out, linear_encoder
from neurotorch.models.encoder_memory import EncoderSize, available_memory, plan_memory
from neurotorch.models.ridge import folds_of

PENALTIES = (0.03, 1.0, 30.0)


class BatchCounter(L.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_start(self, *args) -> None:
        self.batches += 1


def trainer(counter: L.Callback | None = None) -> L.Trainer:
    return L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=[counter] if counter else [],
    )


def fit(model: LinearEncoder, datamodule) -> BatchCounter:
    counter = BatchCounter()
    trainer(counter).fit(model, datamodule)
    return counter


def test_a_fit_that_does_not_fit_is_refused_before_the_first_batch_and_the_chunk_it_names_fits(
    tiny_laion_root, monkeypatch, tmp_path
):
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root), subject="sub-01", voxels={"roi": "face"}, batch_size=64
    )
    n_voxels, n_features = dm.n_voxels["sub-01"], dm.feature_dims["embedding"]
    size = EncoderSize(
        n_features=n_features, n_voxels=n_voxels, n_candidates=3, batch_size=64, n_test_images=24
    )
    # memory for the fit with its cross-products in a scratch file, chunks of ~20 voxels, not more
    budget = size.need(20, on_disk=True) / encoder_memory.PLAN_FRACTION
    monkeypatch.setattr(encoder_memory, "available_memory", lambda: (int(budget), "a test"))
    model = LinearEncoder(penalties=PENALTIES, voxel_chunk=n_voxels)
    counter = BatchCounter()
    with pytest.raises(EncoderMemoryError) as refused:
        counter = fit(model, dm)
    message = str(refused.value)
    assert f"fitting {n_voxels:,} voxels × {n_features:,} features" in message
    assert (
        f"{size.need(n_voxels, on_disk=False) / 1e9:.2f} GB with voxel_chunk={n_voxels:,}"
        in message
    )
    assert counter.batches == 0 and model._stats is None
    chunk = int(message.split("Use voxel_chunk=")[1].split(" ")[0].replace(",", ""))
    assert 10 < chunk <= 20 and n_voxels % chunk  # chunks with a remainder

    model = LinearEncoder(penalties=PENALTIES, voxel_chunk=chunk, output_dir=str(tmp_path))
    fit(model, dm)
    assert model.memory_plan.on_disk and model.memory_plan.voxel_chunk == chunk
    parts = [split_arrays(dm, part) for part in ("train", "val")]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    folds = folds_of([n for p in parts for n in p[2]], model.hparams.n_folds).numpy()
    weight, intercept, penalty = reference_fit(x, y, folds, PENALTIES, [x.shape[1]], [], "r2")
    np.testing.assert_array_equal(model.penalty.numpy(), penalty)
    scale = np.abs(weight).max()
    np.testing.assert_allclose(model.weight.numpy(), weight, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(model.bias.numpy(), intercept, rtol=0, atol=1e-8 * scale)

    # testing and predicting convert the batches in voxel chunks too (here 7, with a remainder)
    monkeypatch.setattr(linear_encoder, "CONVERSION_CHUNK", 7)
    monkeypatch.setattr(held_out, "CONVERSION_CHUNK", 7)
    trainer().test(model, dm)
    x_test, y_test, _ = split_arrays(dm, "test")
    expected = x_test @ weight + intercept
    pc, yc = expected - expected.mean(0), y_test - y_test.mean(0)
    r = (pc * yc).sum(0) / np.sqrt((pc**2).sum(0) * (yc**2).sum(0))
    np.testing.assert_allclose(model.test_r, r, rtol=0, atol=1e-6)
    predicted = torch.cat([b["prediction"] for b in trainer().predict(model, dm)]).numpy()
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_the_automatic_plan_keeps_everything_in_memory_when_it_fits(tiny_laion_root):
    dm = LaionFMRIDataModule(
        data_dir=str(tiny_laion_root), subject="sub-01", voxels={"roi": "FFA1"}, batch_size=64
    )
    model = LinearEncoder(penalties=PENALTIES, precision="float32")
    fit(model, dm)
    assert not model.memory_plan.on_disk
    assert model.memory_plan.voxel_chunk == dm.n_voxels["sub-01"]
    assert model.weight.dtype == torch.float32


def test_the_plan_spills_to_a_scratch_file_when_memory_is_short(monkeypatch):
    size = EncoderSize(n_features=1024, n_voxels=572_557, n_candidates=7, n_test_images=224)
    # in memory the cross-products alone are K·D·8 bytes per voxel: 23.45 GB
    assert size.scratch_bytes() == 5 * 1024 * 572_557 * 8
    asked: list[int] = []  # the disk's room is checked for the scratch file (not this disk's)
    monkeypatch.setattr(encoder_memory, "_check_scratch_space", lambda n, free: asked.append(n))
    roomy = plan_memory(size, available=(10**15, "a test"))
    assert not roomy.on_disk and roomy.voxel_chunk < size.n_voxels and asked == []
    short = plan_memory(size, available=(22 * 10**9, "a test"))
    assert short.on_disk and short.need <= 22e9 * encoder_memory.PLAN_FRACTION
    assert short.need < roomy.need / 3
    assert asked == [5 * 1024 * 572_557 * 8]


def test_a_plan_for_another_machine_takes_its_scratch_disk_and_not_this_one(monkeypatch):
    size = EncoderSize(n_features=1024, n_voxels=572_557, n_candidates=7, n_test_images=224)
    scratch = 5 * 1024 * 572_557 * 8  # the float64 cross-products, 23.45 GB

    def this_disk(path):
        raise AssertionError(f"this machine's disk was consulted ({path})")

    monkeypatch.setattr(encoder_memory.shutil, "disk_usage", this_disk)
    plan = plan_memory(size, available=(22 * 10**9, "a test"), scratch_free=scratch)
    assert plan.on_disk
    with pytest.raises(CacheError, match=r"need 23\.45 GB of scratch space .* but 23\.44 GB"):
        plan_memory(size, available=(22 * 10**9, "a test"), scratch_free=scratch - 10**7)


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_available_memory_is_the_tightest_of_meminfo_and_the_cgroup_limits(tmp_path):
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "meminfo", "MemTotal: 24000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_memory(proc, cgroups) == (8_192_000_000, "MemAvailable in /proc/meminfo")
    # cgroup v1: the job's limit (4 GB, 3 GB used of which 0.5 GB reclaimable file pages) binds
    write(proc / "self" / "cgroup", "5:cpu:/\n4:memory:/job/step\n0::/\n")
    write(cgroups / "memory" / "job" / "step" / "memory.limit_in_bytes", "9223372036854771712\n")
    write(cgroups / "memory" / "job" / "step" / "memory.usage_in_bytes", "100\n")
    write(cgroups / "memory" / "job" / "memory.limit_in_bytes", "4000000000\n")
    write(cgroups / "memory" / "job" / "memory.usage_in_bytes", "3000000000\n")
    write(cgroups / "memory" / "job" / "memory.stat", "cache 9\ntotal_inactive_file 500000000\n")
    found, source = available_memory(proc, cgroups)
    assert found == 1_500_000_000 and source.endswith("memory/job")
    # cgroup v2: "max" is no limit; the parent's 2 GB limit with 1.5 GB used binds
    write(proc / "self" / "cgroup", "0::/slurm/job1\n")
    write(cgroups / "cgroup.controllers", "memory\n")
    write(cgroups / "slurm" / "job1" / "memory.max", "max\n")
    write(cgroups / "slurm" / "job1" / "memory.current", "5\n")
    write(cgroups / "slurm" / "memory.max", "2000000000\n")
    write(cgroups / "slurm" / "memory.current", "1500000000\n")
    write(cgroups / "slurm" / "memory.stat", "anon 1\ninactive_file 100000000\n")
    assert available_memory(proc, cgroups) == (600_000_000, f"the cgroup limit of {cgroups}/slurm")
    assert available_memory(tmp_path / "nothing", cgroups)[0] is None
