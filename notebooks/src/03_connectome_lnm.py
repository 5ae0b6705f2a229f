# ruff: noqa: E402  (a notebook imports where a step needs it)
# %% [markdown]
# # Quickstart 3 — connectomes and lesion network mapping
#
# A normative connectome is the resting-state fMRI of many people in one brain mask (MNI152,
# 2 mm), stored by Lacuna as HDF5 batch files of `(subjects, timepoints, voxels)`. Lesion network
# mapping asks which brain regions are functionally connected to a lesion: correlate the mean
# time course of the lesion's voxels with every voxel, per subject, and test across subjects.
#
# 1. a synthetic connectome with planted networks and lesions inside them;
# 2. reading it: batch files, the mask, one subject at a time;
# 3. network maps of many lesions in one pass (mean Fisher z, t, p, FDR q), drawn with nilearn;
# 4. checking the maps against the planted networks and against numpy;
# 5. family-wise error by sign flips, parcel tables, and saving everything to a folder.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars print as text

# %%
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from IPython.display import Image, display

from neurotorch.describe import describe
from neurotorch.synthetic.connectome import make_connectome_dataset

root = make_connectome_dataset("connectome-tiny", size="tiny")  # reused if it already exists
figures = Path("figures")
print(describe(root))

# %% [markdown]
# ## 1. Reading the batches
#
# `ConnectomeBatches` opens every batch file lazily (per process, so it is safe in DataLoader
# workers) and checks that they agree on mask, affine and timepoints. Column `j` of a subject's
# `(timepoints, voxels)` array is voxel `mask_indices[j]` of the mask grid.

# %%
from neurotorch.connectome import ConnectomeBatches

batches = ConnectomeBatches(root / "batches")
print(batches)
print(batches.subject_ids)
series = batches.read_subject(0)
print("subject 0:", series.shape, series.dtype)

# %% [markdown]
# ## 2. Lesion network maps
#
# `network_map` takes binary lesion masks (a folder of NIfTI files, images or arrays, on the
# connectome's grid; `resample=True` for masks on another grid) and makes one pass over the
# subjects for all lesions at once: per subject, the Pearson correlation of the lesion's seed time
# course with every voxel, Fisher-z transformed; across subjects, mean z, r, t, two-sided p and
# Benjamini–Hochberg q.

# %%
from neurotorch.connectome import network_map

result = network_map(root / "lesions", batches)
print(result)
print(result.summary())  # the peak t outside each lesion, where it lies (mm), significant voxels

# %% [markdown]
# The maps are drawn with nilearn over its bundled MNI152 template, slices labelled in mm, left
# and right marked, the lesion outlined.

# %%
from neurotorch.plotting.connectome import plot_network_map

lesion_name = result.names[0]
display(Image(filename=plot_network_map(result, lesion_name, figures / "t_map.png", kind="t")))
q_glass = plot_network_map(
    result, lesion_name, figures / "q_glass.png", kind="q", threshold=-np.log10(0.05), style="glass"
)
display(Image(filename=q_glass))

# %% [markdown]
# ## 3. Does it find the planted networks?
#
# Each synthetic lesion sits inside one planted network (two mirrored spheres sharing a time
# course). The voxels significant at FDR q < 0.05 should be that network's voxels.

# %%
networks = nib.load(root / "_groundtruth" / "networks.nii.gz").get_fdata().astype(int)
voxel_network = networks[tuple(batches.mask_indices.T)]
truth = pd.read_csv(root / "_groundtruth" / "lesions.csv")
rows = []
for lesion_row in truth.itertuples():
    significant = result.map("q", lesion_row.lesion) < 0.05
    own = voxel_network == lesion_row.network
    rows.append(
        {
            "lesion": lesion_row.lesion,
            "network": lesion_row.network,
            "significant voxels": int(significant.sum()),
            "inside its network": f"{(significant & own).sum() / max(significant.sum(), 1):.0%}",
            "network recovered": f"{(significant & own).sum() / own.sum():.0%}",
        }
    )
pd.DataFrame(rows)

# %% [markdown]
# And an independent check of the first step: for one subject, the seed correlation computed
# with `np.corrcoef` equals the one `network_map` computes (`seed_correlations`).

# %%
import torch

from neurotorch.connectome import SeedWeights, load_lesions, seed_correlations

lesion_set = load_lesions(root / "lesions", batches)
seed = series[:, lesion_set.masks[0]].mean(axis=1)
r_numpy = np.array([np.corrcoef(seed, series[:, v])[0, 1] for v in range(batches.n_voxels)])
seeds = SeedWeights.from_masks(lesion_set.masks[:1])
r_torch = seed_correlations(torch.from_numpy(series), seeds)[0].numpy()
np.testing.assert_allclose(r_torch, r_numpy, atol=1e-4)
print("seed correlations match np.corrcoef for all", batches.n_voxels, "voxels")

# %% [markdown]
# ## 4. Family-wise error, parcels, and the output folder
#
# Sign-flip permutations give FWER-corrected p values (the observed |t| and the null come from
# one float64 computation). An atlas summarises the maps per parcel; `convention="lacuna"`
# reproduces Lacuna's numbers (averages over the whole parcel, zeros outside the brain mask).
# `save` writes everything into a folder that neurotorch owns, complete or not at all.

# %%
from neurotorch.connectome import Atlas

fwer = network_map(root / "lesions", batches, n_permutations=200, seed=0)
atlas = Atlas.from_files(
    root / "_groundtruth" / "networks.nii.gz", {1: "net-1", 2: "net-2", 3: "net-3"}
)
parcels = atlas.aggregate(fwer, kinds="t", how="mean")
lacuna = atlas.aggregate(fwer, kinds="t", how="mean", convention="lacuna")
written = fwer.save(
    "lnm-maps", tables={"parcels": parcels}, figure=plot_network_map, overwrite=True
)
print(len(written), "files in lnm-maps/, e.g.", sorted(p.name for p in written)[:4])
parcels.assign(lacuna_value=lacuna["value"]).head(6)
