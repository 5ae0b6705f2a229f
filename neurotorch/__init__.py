"""neurotorch: PyTorch-first data loading for NeuroAI research.

fMRI single-trial betas paired with their stimuli, leadfield-simulated EEG/MEG, connectome
batches and lesion network mapping, as torch Datasets and Lightning DataModules.
"""

from __future__ import annotations

__version__ = "0.4.0"

from neurotorch.data.registry import list_datasets, load_dataset  # noqa: E402
from neurotorch.log import set_log_level  # noqa: E402

__all__ = ["__version__", "list_datasets", "load_dataset", "set_log_level"]
