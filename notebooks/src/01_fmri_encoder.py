# ruff: noqa: E402  (a notebook imports where a step needs it)
# %% [markdown]
# # Quickstart 1 — an fMRI encoder on LAION-fMRI
#
# This notebook walks through the fMRI side of neurotorch on the synthetic LAION-fMRI tree (same
# files, names and dtypes as the real dataset, a few MB, written in seconds):
#
# 1. the dataset: what a tree holds, one subject's betas and trials;
# 2. the ROI grammar: names, categories, `"all"` and lists;
# 3. the train/test splits (random, cluster, tau, OOD);
# 4. a plain PyTorch `DataLoader` over trials paired with CLIP embeddings;
# 5. a Lightning run: a voxel-wise ridge encoder, CLIP embedding → ROI betas;
# 6. the same encoder at a realistic single-trial SNR.
#
# To use the real data, replace `root` with your LAION-fMRI folder or an `s3://` URL.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars print as text

# %%
from pathlib import Path

import numpy as np
from IPython.display import Image, display

from neurotorch.describe import describe
from neurotorch.synthetic.laion_fmri import make_laion_fmri

root = make_laion_fmri(size="tiny", progress=False)  # reused if it already exists
figures = Path("figures")
print(describe(root))

# %% [markdown]
# ## 1. One subject
#
# `load_subject` follows the `laion_fmri` API: every accessor reads its file and returns numpy
# arrays or pandas tables. Betas are `(n_trials, n_voxels)` float32, one row per trial in the
# order of the session's trial table, whose `label` column names the image that was shown.

# %%
from neurotorch.fmri import load_subject

sub = load_subject("sub-01", data_dir=root)
print(sub.get_sessions(), "-", sub.get_n_voxels(), "brain voxels")
trials = sub.get_trial_info("ses-01")
trials.head()

# %%
betas = sub.get_betas(session="ses-01")
print("whole brain:", betas.shape, betas.dtype)
print("first trial shows", trials.label[0])

# %% [markdown]
# Quality control: the noise ceiling (percent of variance that is repeatable signal) per session
# and at the subject level.

# %%
from neurotorch.plotting.fmri import plot_noise_ceilings, plot_roi_overlay

display(Image(filename=plot_noise_ceilings(sub, figures / "noise_ceilings.png")))

# %% [markdown]
# ## 2. The ROI grammar
#
# `roi=` takes an ROI name (`"FFA1"`), a category (`"face"`), `"all"`, or a list mixing them
# (their union). The same query works in `get_betas`, `get_roi_mask`, the torch datasets and
# the DataModule.

# %%
print(sub.get_available_categories())
print("face ROIs:", sub.get_available_rois(category="face"))
for query in ["FFA1", "face", ["face", "V1v"], "all"]:
    print(f"{query!s:>16}: {sub.get_roi_mask(query).sum():4d} voxels")

face_betas = sub.get_betas(session="ses-01", roi="face", nc_threshold=20)
print("face voxels with noise ceiling > 20 %:", face_betas.shape)

# %%
display(Image(filename=plot_roi_overlay(sub, ["face", "place", "V1v"], figures / "rois.png")))

# %% [markdown]
# ## 3. Splits
#
# Every pool (`shared`, or a subject) has twelve splits: `random_0..4`, `cluster_k5_0..4`
# (a k-means cluster of the CLIP embeddings held out), `tau` (test images far from their nearest
# training image) and `ood` (out-of-distribution test images). Ids are image names.

# %%
from neurotorch.fmri.splits import get_train_test_ids, list_ood_types, list_splits
from neurotorch.plotting.fmri import plot_split_projection

print(list_splits("shared", data_dir=root))
train_ids, test_ids = get_train_test_ids("tau", "shared", data_dir=root)
print(f"tau: {len(train_ids)} train / {len(test_ids)} test images")
print("OOD types:", list_ood_types("shared", data_dir=root))
display(Image(filename=plot_split_projection(root, "tau", "shared", figures / "tau.png")))

# %% [markdown]
# ## 4. A PyTorch DataLoader
#
# `BetasDataset` pairs every trial with its stimulus (here the CLIP embedding). The betas come
# from a prepared, memory-mapped trials × voxels store that is built once per voxel selection,
# so random access during training is a row read. `trials={"split": "tau", "part": "train"}`
# keeps the training images of the `tau` split; `voxels={"roi": "face"}` the face ROIs.

# %%
from torch.utils.data import DataLoader

from neurotorch.data.collate import collate_items
from neurotorch.data.fmri.betas import BetasDataset

train_set = BetasDataset(
    root,
    "sub-01",
    trials={"split": "tau", "part": "train"},
    voxels={"roi": "face"},
    features="CLIP",
)
loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_items)
batch = next(iter(loader))
print(len(train_set), "training trials")
print(
    {
        key: tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        for key, value in batch.items()
    }
)

# %% [markdown]
# ## 5. A Lightning run
#
# `LaionFMRIDataModule` builds the train / validation / test sets of one split (validation
# images are carved from the training images) and `LinearEncoder` fits a voxel-wise ridge
# regression in one pass: it sums per-fold statistics of the training and validation trials
# (folds grouped by image), picks each voxel's penalty by 5-fold cross-validation and refits on
# all of them. The test step reports the median correlation and R², and the fraction reached of
# the noise ceiling of the test trials themselves (with its sampling margin).
# The same run from the command line: `neurotorch fit --config encoder` (then `neurotorch predict
# --config encoder --ckpt_path <the last.ckpt it prints>` writes the predictions with their ids).

# %%
import logging

import lightning as L

from neurotorch.lightning import LaionFMRIDataModule
from neurotorch.models import LinearEncoder

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the output short
warnings.filterwarnings(
    "ignore", message=".*(configure_optimizers|LeafSpec).*"
)  # the ridge fit needs no optimizer
L.seed_everything(0, verbose=False)
datamodule = LaionFMRIDataModule(
    data_dir=str(root),
    subject="sub-01",
    voxels={"roi": ["face", "place", "V1v"]},
    features="CLIP",
    trials={"split": "random_0", "val_fraction": 0.1},
    batch_size=64,
)
model = LinearEncoder(output_dir="encoder-run")


def fit_and_test(model: L.LightningModule, datamodule: L.LightningDataModule) -> None:
    """One epoch (the ridge fit is closed-form), then the test split."""
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule)
    trainer.test(model, datamodule, verbose=False)


fit_and_test(model, datamodule)
print({key: value for key, value in model.test_metrics.items() if np.isscalar(value)})

# %%
display(Image(filename="encoder-run/encoder_test.png"))

# %% [markdown]
# The synthetic data carry their ground truth (`_groundtruth/` in the tree): the correlation each
# voxel could reach with single trials. The fitted encoder should follow it closely.

# %%
truth = np.load(root / "_groundtruth" / "sub-01_encoding.npz")
attainable = np.full(int(np.prod(truth["grid_shape"])), np.nan)
attainable[truth["brain_index"]] = truth["attainable_r"]  # on the flattened grid
attainable = attainable[sub.get_brain_mask()][sub.get_roi_mask(["face", "place", "V1v"])]
agreement = np.corrcoef(model.test_r, attainable)[0, 1]
print(f"correlation of test r with the attainable r: {agreement:.2f}")
assert agreement > 0.6, "the encoder should follow the ground truth (0.77 when written)"

# %% [markdown]
# ## 6. A realistic SNR
#
# Real single-trial betas are much noisier: encoding models reach r ≈ 0.1–0.5. The
# `snr="realistic"` preset keeps the images, trials and true weights and triples the noise of
# the signal voxels (single-trial ceilings r 0.21–0.47). The ceiling reported by the test step is
# estimated from the test trials alone; the generator's ground truth gives the true one.

# %%
realistic = make_laion_fmri(size="tiny", snr="realistic", progress=False)
datamodule = LaionFMRIDataModule(
    data_dir=str(realistic),
    subject="sub-01",
    voxels={"roi": ["face", "place", "V1v"]},
    features="CLIP",
    trials={"split": "random_0", "val_fraction": 0.1},
    batch_size=64,
)
model = LinearEncoder(per_voxel=False, output_dir="encoder-realistic")
fit_and_test(model, datamodule)
truth = np.load(realistic / "_groundtruth" / "sub-01_encoding.npz")
attainable = np.full(int(np.prod(truth["grid_shape"])), np.nan)
attainable[truth["brain_index"]] = truth["attainable_r"]
attainable = attainable[sub.get_brain_mask()][sub.get_roi_mask(["face", "place", "V1v"])]
print(f"median test r: {model.test_metrics['median_r']:.3f}")
print(f"median ceiling of the test trials: {model.test_metrics['median_ceiling_r']:.3f}")
print(f"median attainable r (ground truth): {np.median(attainable):.3f}")
realistic_r = model.test_metrics["median_r"]
assert 0.1 < realistic_r < 0.5, "the realistic preset should look like real single-trial data"
