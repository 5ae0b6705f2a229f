"""The neurotorch exception hierarchy.

Every error names the file or value at fault and says what to do about it. The laion_fmri names
(`DataDirNotSetError`, `DataNotDownloadedError`, `StimuliNotDownloadedError`,
`SubjectNotFoundError`) are kept so code written against that package keeps working.
"""

from __future__ import annotations


class NeurotorchError(Exception):
    """Root of every error neurotorch raises on purpose."""


class DataDirNotSetError(NeurotorchError):
    """No data root was given and none is configured."""


class DataNotDownloadedError(NeurotorchError, FileNotFoundError):
    """A file the dataset should contain is missing."""


class StimuliNotDownloadedError(DataNotDownloadedError):
    """A stimulus file (images, embeddings, captions, segmentations) is missing."""


class SubjectNotFoundError(NeurotorchError, ValueError):
    """The requested subject is not in the dataset."""


class CorruptFileError(NeurotorchError, OSError):
    """A file is truncated or its content fails a checksum or format check."""


class FormatError(NeurotorchError, ValueError):
    """A file is readable but does not follow the expected schema (keys, columns, dtypes, shapes)."""


class ShapeMismatchError(FormatError):
    """Two arrays or files that must agree in shape, grid, affine or length do not."""


class OrientationMismatchError(ShapeMismatchError):
    """Two images that must share an orientation (e.g. RAS+) do not."""


class SplitError(FormatError):
    """A split file is malformed or names a split, pool or variant that does not exist."""


class UnsafePathError(NeurotorchError, ValueError):
    """A path or identifier would escape the data root."""


class CacheError(NeurotorchError, OSError):
    """A cache entry could not be built or is stale in a way that cannot be repaired."""


class RemoteAccessError(NeurotorchError, OSError):
    """A remote store could not be reached or refused access."""


class UnsafePickleError(FormatError):
    """A file holds pickled objects and the caller did not opt in to loading them."""


class LicenseNotAcceptedError(NeurotorchError):
    """Data with a licence of its own (e.g. stimulus images) were requested without accepting it."""


class RoiNotFoundError(NeurotorchError, ValueError):
    """The requested ROI or ROI category is not available for the subject."""


class EncoderConfigError(NeurotorchError, ValueError):
    """An encoder setting (penalties, folds, feature spaces, score) or its training data is unusable."""
