"""The neurotorch exception hierarchy.

Every error names the file or value at fault and says what to do about it. The laion_fmri names
(`DataDirNotSetError`, `DataNotFoundError`, `DataNotDownloadedError`, `NoMatchingDataError`,
`StimuliNotDownloadedError`, `SubjectNotFoundError`, `LicenseNotAcceptedError`) are kept, with
laion_fmri's base classes among theirs, so ``except`` clauses written for that package keep working.
"""

from __future__ import annotations


class NeurotorchError(Exception):
    """Root of every error neurotorch raises on purpose."""


class DataDirNotSetError(NeurotorchError):
    """No data root was given and none is configured."""


class MissingDependencyError(NeurotorchError, ImportError):
    """An optional package that this call needs is not installed (the message names the extra)."""


class ConfigError(NeurotorchError, ValueError):
    """A setting (argument or environment variable) has a value neurotorch does not understand."""


class DataNotFoundError(NeurotorchError, FileNotFoundError):
    """Requested data are absent from the dataset or the source (laion_fmri's base class)."""


class DataNotDownloadedError(DataNotFoundError):
    """A file the dataset should contain is missing."""


class NoMatchingDataError(DataNotFoundError):
    """A download selection matches nothing at the source (no such session, no file)."""


class StimuliNotDownloadedError(DataNotDownloadedError):
    """A stimulus file (images, embeddings, captions, segmentations) is missing."""


class SubjectNotFoundError(DataNotDownloadedError, ValueError):
    """The requested subject is not in the dataset: a ``ValueError`` (laion_fmri's class for a
    malformed id) and a `DataNotDownloadedError` (what laion_fmri raises for an absent subject)."""


class DatasetExistsError(NeurotorchError, FileExistsError):
    """An output folder holds something that neurotorch will not reuse or delete."""


class ParameterError(NeurotorchError, ValueError):
    """An argument has a value the function does not accept: an unknown name, a value out of
    range (a level outside (0, 1), a negative variance), a duplicate, or a selection that leaves
    nothing (no trials, no voxels)."""


class ShardingError(ParameterError):
    """A rank, world size, worker or batch size that cannot describe a shard."""


class UnitIndexError(ParameterError):
    """A unit position (``only=``, ``--unit K``) past the last unit of the run: a usage error
    on the command line (exit status 2)."""


class CorruptFileError(NeurotorchError, OSError):
    """A file is truncated or its content fails a checksum or format check."""


class FormatError(NeurotorchError, ValueError):
    """A file is readable but does not follow the expected schema (keys, columns, dtypes, shapes)."""


class ShapeMismatchError(FormatError):
    """Two arrays or files that must agree in shape, grid, affine or length do not."""


class SpaceMismatchError(ShapeMismatchError):
    """Two images or files that must share a template space (e.g. MNI152NLin6Asym) do not."""


class OrientationMismatchError(ShapeMismatchError):
    """Two images that must share an orientation (e.g. RAS+) do not."""


class SplitError(FormatError):
    """A split file is malformed or names a split, pool or variant that does not exist."""


class SplitNotFoundError(SplitError, DataNotFoundError):
    """The split, pool or split file asked for does not exist: a ``ValueError`` (laion_fmri's class
    for an unknown name) and a ``FileNotFoundError`` (its class for a missing split file)."""


class UnsafePathError(NeurotorchError, ValueError):
    """A path or identifier would escape the data root."""


class CacheError(NeurotorchError, OSError):
    """A cache entry could not be built or is stale in a way that cannot be repaired."""


class RemoteAccessError(NeurotorchError, OSError):
    """A remote store could not be reached or refused access."""


class UnsafePickleError(FormatError):
    """A file holds pickled objects and the caller did not opt in to loading them."""


class LicenseNotAcceptedError(NeurotorchError, RuntimeError):
    """Data with a licence of its own (e.g. stimulus images) were requested without accepting it."""


class NameNotFoundError(NeurotorchError, KeyError):
    """An image, noun, mask instance or embedding model is not in the dataset (a ``KeyError``,
    as laion_fmri raises)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownModelError(NameNotFoundError, ValueError):
    """An embedding model the dataset does not have (a ``KeyError`` as in laion_fmri, and a
    ``ValueError`` as for every other unknown option)."""


class RoiNotFoundError(NeurotorchError, ValueError):
    """The requested ROI or ROI category is not available for the subject."""


class NonFiniteError(FormatError):
    """An array or file that must be finite holds NaN or infinite values."""


class EncoderConfigError(ParameterError):
    """An encoder setting (penalties, folds, feature spaces, score) or its training data is unusable."""


class EncoderMemoryError(NeurotorchError, MemoryError):
    """An encoder fit would need more memory than the machine has available: refused before the
    first batch, with the voxel count, the estimate and the ``voxel_chunk`` to use."""


class UnitsFailedError(NeurotorchError, RuntimeError):
    """Some units of a parallel run raised; the others finished and kept their outputs, so the
    same command run again redoes only the failed ones. ``results`` holds every unit's result."""

    def __init__(self, results: list):
        self.results = results
        failed = [r for r in results if r.status == "failed"]
        listed = "; ".join(f"{r.key}: {r.error.rstrip('.')}" for r in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(
            f"{len(failed)} of {len(results)} units failed: {listed}{more}. The other units' "
            "outputs are kept; fix the cause and run the same command again to redo only these."
        )


class OutputWriteError(NeurotorchError, OSError):
    """An output file or folder could not be written (a full disk, no permission); the message
    names the path, and nothing partial is left at the output."""


class DuplicateSubjectError(FormatError):
    """The same subject appears twice in a dataset (e.g. a connectome batch file copied under a
    second chunk number), which would count it twice."""


class NotFittedError(ParameterError):
    """A model asked to validate, test or predict before it was fitted or loaded from a checkpoint."""

    def __init__(self, model: str, what: str):
        super().__init__(
            f"{model} cannot {what}: it is not fitted. Run trainer.fit first, or give the "
            "checkpoint of a fitted model (ckpt_path=..., on the command line "
            "--ckpt_path runs/<name>/version_N/checkpoints/last.ckpt)."
        )


class DtypeRangeError(ParameterError):
    """Values beyond the range of the storage dtype asked for (float16 holds ``|x| <= 65504``)."""


class MixedBatchError(ParameterError):
    """A batch that mixes items of different subjects (their voxel counts differ): the loader needs
    a batch sampler that groups by subject."""


class ImplausibleDataError(FormatError, ParameterError):
    """Well-formed data that describe something physically impossible: an all-zero leadfield,
    EEG measured in tesla, a gradiometer coil on an EEG channel, a negative posterior variance or
    a covariance that is not positive semi-definite. A `FormatError` when it comes from a file, a
    `ParameterError` when it is an argument (both ``except`` clauses catch it)."""


class WeightsNotAvailableError(DataNotDownloadedError):
    """A model's weights (or its configuration or preprocessing) are not on this machine and
    cannot be downloaded; the message names them and how to point at a local copy."""
