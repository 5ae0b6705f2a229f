"""Lightning DataModules over neurotorch datasets, with the bundled splits."""

from neurotorch.lightning.laion_fmri import LaionFMRIDataModule

__all__ = ["LaionFMRIDataModule"]
