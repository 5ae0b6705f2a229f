"""One LAION-fMRI subject: betas, noise ceilings, masks, ROIs, anatomy and the trial table.

The accessors keep the names and semantics of laion_fmri's ``Subject``: each one reads the file it
names and returns numpy arrays / pandas tables, nothing is cached on disk, and a list of sessions
gives a dict keyed by session (trial counts differ between sessions, so nothing is stacked).

The voxel axis of every voxel array is the subject's brain mask (``mask_source="anatomical"`` by
default, or ``"rsquare"``) flattened in C order, narrowed by ``roi=`` / ``mask=`` /
``nc_threshold=``.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, cast

import nibabel as nib
import numpy as np
import pandas as pd

from neurotorch._docs import fill_doc
from neurotorch._options import as_names, check_option
from neurotorch.errors import (
    DataNotDownloadedError,
    FormatError,
    ParameterError,
    RoiNotFoundError,
    SubjectNotFoundError,
    UnsafePathError,
)
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import HOW_TO_GET, read_table, require, resolve_root
from neurotorch.fmri.discovery import get_sessions, get_subjects
from neurotorch.fmri.masks import (
    brain_mask_file,
    combine_voxel_mask,
    read_brain_mask,
    read_on_grid,
    scatter_to_grid,
)
from neurotorch.fmri.nan_policy import DEFAULT_NAN_POLICY, apply_nan_policy, check_nan_policy
from neurotorch.fmri.rois import (
    RoiQuery,
    available_rois,
    resolve_roi_query,
    roi_data,
    union_roi_volume,
)
from neurotorch.fmri.session_checks import (
    check_betas_grid,
    read_session_trials,
    session_n_volumes,
    trial_volumes,
)
from neurotorch.fmri.stimuli import Stimuli
from neurotorch.fmri.trial_stimuli import (
    TrialCaptions,
    TrialEmbeddings,
    TrialImages,
    TrialSegmentations,
)
from neurotorch.io.atomic import atomic_path, named_write_errors
from neurotorch.io.nibabel_read import read_nifti_image
from neurotorch.io.nifti import read_masked_betas, read_nifti_header
from neurotorch.io.storage import DataRoot

TRIAL_TABLE_COLUMNS = (
    "session",
    "session_trial",
    "image_name",
    "stim_idx",
    "unique_or_shared",
    "dataset",
)

SessionArg = str | int | list | tuple | None


class _VoxelAxis(NamedTuple):
    """A voxel selection on the grid, the affine of that grid and the mask file it came from."""

    selection: np.ndarray
    affine: np.ndarray
    mask_file: str


@fill_doc
def load_subject(
    subject: str,
    data_dir: str | os.PathLike | DataRoot | None = None,
    storage_options: dict | None = None,
) -> Subject:
    """Load a subject of the LAION-fMRI tree.

    Parameters
    ----------
    subject
        ``"sub-01"`` or ``"01"``: a string, as in laion_fmri (an integer raises ``TypeError``
        there and here; ``load_subjects("all")[i]`` gives the i-th subject).
    %(fmri_data_dir)s
    %(storage_options)s

    Raises
    ------
    TypeError
        ``subject`` is not a string.
    DataDirNotSetError
        No root given or configured.
    DataNotDownloadedError
        The root holds no subject at all.
    SubjectNotFoundError
        The subject is not in the dataset (the message lists those that are). It is also a
        `DataNotDownloadedError` (what laion_fmri raises for an absent subject, a
        ``FileNotFoundError``) and a ``ValueError``.
    """
    if not isinstance(subject, str):
        raise TypeError(
            f"subject must be a string such as 'sub-01' or '01', got {subject!r} "
            f"({type(subject).__name__}); laion_fmri refuses other types too. "
            "load_subjects('all')[i] gives the i-th subject."
        )
    root = resolve_root(data_dir, storage_options)
    available = get_subjects(root)
    try:
        subject_id = layout.subject_id(subject)
    except UnsafePathError:
        raise
    except ValueError as err:
        raise SubjectNotFoundError(f"{err} Available: {', '.join(available)}.") from None
    if subject_id not in available:
        raise SubjectNotFoundError(
            f"Subject {subject_id} is not in {root.described}; available: {', '.join(available)}."
        )
    return Subject(subject_id, root)


def _check_roi_or_mask(roi: RoiQuery | None, mask: np.ndarray | None) -> None:
    if roi is not None and mask is not None:
        raise ParameterError(
            "roi and mask are mutually exclusive; combine them yourself, e.g. "
            "mask=sub.get_roi_mask(roi) & my_mask."
        )


class Subject:
    """A LAION-fMRI subject (see `load_subject`).

    Attributes
    ----------
    subject_id
        ``"sub-01"``.
    root
        The dataset root (`DataRoot`).
    images, embeddings, segmentations, captions
        Per-trial stimulus namespaces keyed by global trial index (a row of `metadata`).
    """

    def __init__(self, subject_id: str, data_dir: str | os.PathLike | DataRoot | None = None):
        self.subject_id = layout.subject_id(subject_id)
        self.root = resolve_root(data_dir)
        self._trial_table: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"Subject({self.subject_id!r}, data_dir={self.root.url!r})"

    @property
    def data_dir(self) -> str:
        """The dataset root as a path or URL."""
        return self.root.url

    # -- sessions and trials -------------------------------------------------------------

    def get_sessions(self) -> list[str]:
        """Session ids that hold a betas file, sorted."""
        return get_sessions(self.subject_id, self.root)

    def _sessions(self, session: SessionArg) -> tuple[list[str], bool]:
        """(session ids, whether a list was given); None is an error, as in laion_fmri."""
        if session is None:
            example = (self.get_sessions() or ["ses-01"])[0]
            raise ParameterError(
                f"session is required: pass one session (e.g. {example!r}), a list of them, "
                "or sub.get_sessions() for all of them."
            )
        if isinstance(session, list | tuple):
            return [layout.session_id(s) for s in session], True
        return [layout.session_id(session)], False

    def _session_file(self, relpath: str, what: str) -> str:
        hint = f"Sessions of {self.subject_id} on disk: {', '.join(self.get_sessions()) or 'none'}."
        return require(self.root, relpath, what, hint=hint)

    def get_trial_info(self, session: SessionArg = None) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """The trials TSV of a session (session, run, beta_index, label — one row per beta volume).

        A list of sessions gives a dict keyed by session.
        """
        sessions, as_dict = self._sessions(session)
        tables = {ses: self._read_trials(ses) for ses in sessions}
        return tables if as_dict else tables[sessions[0]]

    def _read_trials(self, session: str) -> pd.DataFrame:
        relpath = self._session_file(
            layout.session_trials(self.subject_id, session),
            f"Trials table of {self.subject_id} {session}",
        )
        return read_table(
            self.root, relpath, "Trials table", columns=("label",), sep="\t", dtype={"label": str}
        )

    def trials_metadata(self) -> pd.DataFrame:
        """The trial table behind `metadata`, read once and shared (not a copy: do not modify)."""
        if self._trial_table is None:
            self._trial_table = self._build_metadata()
        return self._trial_table

    def _build_metadata(self) -> pd.DataFrame:
        stimuli = self.stimuli.metadata
        frames = []
        for session in self.get_sessions():
            trials = read_session_trials(self.root, self.subject_id, session)
            volumes = self._trial_volumes(session, trials)
            order = np.argsort(volumes, kind="stable")
            frame = trials.iloc[order].reset_index(drop=True)
            names = frame["label"].astype(str)
            try:
                rows = self.stimuli.rows(names.tolist())
            except KeyError as err:
                relpath = layout.session_trials(self.subject_id, session)
                raise FormatError(
                    f"{self.root.path(relpath)} names an image missing from the stimulus metadata: "
                    f"{err.args[0]} Re-download the stimulus metadata."
                ) from None
            # laion_fmri's column order: the trials TSV's columns, then the derived ones
            frame["session"] = session
            frame["session_trial"] = volumes[order]
            frame["image_name"] = names.to_numpy()
            frame["stim_idx"] = rows
            frame["unique_or_shared"] = stimuli["unique_or_shared"].to_numpy()[rows]
            frame["dataset"] = stimuli["dataset"].to_numpy()[rows]
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=list(TRIAL_TABLE_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def _trial_volumes(self, session: str, trials: pd.DataFrame) -> np.ndarray:
        """`trial_volumes` of a session, with the volume count read from the betas header."""
        n_volumes = session_n_volumes(self.root, self.subject_id, session)
        return trial_volumes(self.root, self.subject_id, session, table=trials, n_volumes=n_volumes)

    @property
    def metadata(self) -> pd.DataFrame:
        """The trial table across sessions; its row index is the global trial index.

        Columns, in laion_fmri's order: the trials TSV's columns (session, run, beta_index,
        label, ...), then session_trial, image_name, stim_idx (row of the stimulus metadata),
        unique_or_shared and dataset; ``session`` holds the session id (``"ses-01"``). Rows follow
        `get_sessions` order and, within a session, the beta volumes: ``session_trial`` is the
        trial's volume (its ``beta_index``), so row ``i`` of a session is row ``i`` of
        ``get_betas(session)``, whatever the row order of the trials TSV.
        """
        return self.trials_metadata().copy()

    # -- stimuli ---------------------------------------------------------------------------

    @cached_property
    def stimuli(self) -> Stimuli:
        """The dataset-wide stimulus hub on the same root."""
        return Stimuli(self.root)

    def has_stimuli(self) -> bool:
        """Whether the stimulus metadata is present (needed by `metadata` and the namespaces)."""
        return self.root.exists(layout.stimuli_metadata())

    def get_n_stimuli(self, stimuli: str | None = None) -> int:
        """Number of images in the stimulus metadata (``"shared"``/``"unique"``: of that kind)."""
        kinds = self.stimuli.metadata["unique_or_shared"]
        if stimuli is None:
            return len(kinds)
        check_option("stimuli", stimuli, layout.STIMULUS_SUBSETS)
        return int((kinds == stimuli).sum())

    def __getattr__(self, name: str) -> Any:
        if name == "to_torch_dataset":  # laion_fmri's call; the torch layer sits above this one
            raise AttributeError(
                "neurotorch's Subject has no to_torch_dataset: the torch datasets live in "
                "neurotorch.data; use neurotorch.data.BetasDataset.from_subject(sub, **kwargs)."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @cached_property
    def images(self) -> TrialImages:
        return TrialImages(self)

    @cached_property
    def embeddings(self) -> TrialEmbeddings:
        return TrialEmbeddings(self)

    @cached_property
    def segmentations(self) -> TrialSegmentations:
        return TrialSegmentations(self)

    @cached_property
    def captions(self) -> TrialCaptions:
        return TrialCaptions(self)

    # -- masks and the voxel axis -----------------------------------------------------------

    def _brain(
        self, source: str = "anatomical", res: str | None = "1pt8"
    ) -> tuple[np.ndarray, np.ndarray]:
        return read_brain_mask(self.root, self.subject_id, source, res=res)

    def get_brain_mask(self, source: str = "anatomical", res: str | None = "1pt8") -> np.ndarray:
        """Boolean brain mask over the flattened grid, shape ``(X*Y*Z,)`` (C order).

        ``source="anatomical"`` reads the shipped brain mask (``res="1pt8"``: functional grid;
        ``None``: full resolution); ``"rsquare"`` is R2mean finite and != 0 on the functional grid (``res``
        is ignored).
        """
        return self._brain(source, res if source == "anatomical" else "1pt8")[0].ravel()

    def get_n_voxels(self, source: str = "anatomical", res: str | None = "1pt8") -> int:
        """Number of voxels in the brain mask."""
        return int(self.get_brain_mask(source, res).sum())

    def _roi_pairs(self, roi: RoiQuery) -> list[tuple[str, str]]:
        return resolve_roi_query(roi, available_rois(self.root, self.subject_id))

    def _selection(
        self, mask_source: str, roi: RoiQuery | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(3-D mask brain ∩ ROI ∩ custom, affine); ``roi`` and ``mask`` exclude each other."""
        _check_roi_or_mask(roi, mask)
        brain, affine = self._brain(mask_source)
        roi_volume = None
        if roi is not None:
            roi_volume = union_roi_volume(
                self.root, self.subject_id, self._roi_pairs(roi), brain, affine
            )
        return combine_voxel_mask(brain, roi=roi_volume, custom=mask), affine

    def get_available_categories(self) -> list[str]:
        """ROI categories with at least one ROI for this subject, sorted."""
        return list(available_rois(self.root, self.subject_id))

    def get_available_rois(self, category: str | None = None) -> list[str]:
        """ROI names of this subject (of one category if given), sorted."""
        available = available_rois(self.root, self.subject_id)
        if category is None:
            return sorted({roi for names in available.values() for roi in names})
        if category not in available and category not in layout.ROI_CATEGORIES:
            raise RoiNotFoundError(
                f"Unknown ROI category {category!r}; available: {', '.join(available)}."
            )
        return sorted(available.get(category, []))

    def get_roi_mask(self, roi: RoiQuery, mask_source: str = "anatomical") -> np.ndarray:
        """Boolean mask over the brain voxels (length `get_n_voxels`) of an ROI query.

        ``roi``: an ROI name, a category, ``"all"`` or a list mixing them (union).
        """
        brain, affine = self._brain(mask_source)
        union = union_roi_volume(self.root, self.subject_id, self._roi_pairs(roi), brain, affine)
        return union[brain]

    def get_roi_masks(
        self, rois: RoiQuery, mask_source: str = "anatomical"
    ) -> dict[str, np.ndarray]:
        """`get_roi_mask` for each query in ``rois``, keyed by the query as given."""
        return {query: self.get_roi_mask(query, mask_source) for query in as_names("rois", rois)}

    def get_roi_data(
        self,
        roi: RoiQuery,
        format: str | None = "all",
        hemi: str | None = "all",
        mask_source: str = "anatomical",
    ) -> dict[str, dict]:
        """ROI files as arrays, one entry per ROI the query names.

        ``{"FFA1": {"volume": bool (n_brain_voxels,), "gii": {"hemi-L": {"func.gii": bool per
        vertex, "label": vertex indices}, "hemi-R": {...}}}}``; ``volume`` is over the brain
        voxels of ``mask_source`` (as `get_roi_mask`); ``format`` ("all", "volume"/"nii.gz",
        "gii", "func.gii", "label"; None = "all") and ``hemi`` ("L", "R", "all"; None = "all")
        prune the tree.
        """
        brain, affine = self._brain(mask_source)
        pairs = self._roi_pairs(roi)
        return roi_data(
            self.root,
            self.subject_id,
            pairs,
            brain=brain,
            affine=affine,
            format=format or "all",
            hemi=hemi or "all",
        )

    # -- betas and noise ceilings ------------------------------------------------------------

    @fill_doc
    def get_betas(
        self,
        session: SessionArg = None,
        roi: RoiQuery | None = None,
        mask: np.ndarray | None = None,
        nc_threshold: float | None = None,
        stimuli: str | None = None,
        streaming: bool = False,
        mask_source: str = "anatomical",
        nan_policy: str = DEFAULT_NAN_POLICY,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Single-trial betas ``(n_trials, n_voxels)`` float32 of a session.

        Parameters
        ----------
        %(session)s
        %(roi)s
        %(mask)s
        %(nc_threshold)s
        stimuli
            ``"shared"`` or ``"unique"`` keeps the trials whose image name has that prefix: the
            volumes their ``beta_index`` names, in volume order.
        streaming
            False: nibabel loads the whole 4-D file, then masks it. True: one sequential pass,
            volume by volume, with the mask applied inline (peak memory one volume + output).
        %(mask_source)s
        %(nan_policy)s

        Raises
        ------
        ShapeMismatchError
            The betas grid or affine differs from the brain mask's, or the file's volumes
            differ in number from the rows of the session's trials table.
        CorruptFileError
            The betas file is truncated or its gzip stream is damaged.
        """
        if stimuli is not None:
            check_option("stimuli", stimuli, layout.STIMULUS_SUBSETS)
        check_nan_policy(nan_policy)
        sessions, as_dict = self._sessions(session)
        selection, affine = self._selection(mask_source, roi, mask)
        mask_file = self.root.path(brain_mask_file(self.subject_id, mask_source))
        axis = _VoxelAxis(selection, affine, mask_file)
        betas = {
            ses: self._session_betas(
                ses, axis, nc_threshold, stimuli=stimuli, streaming=streaming, nan_policy=nan_policy
            )
            for ses in sessions
        }
        return betas if as_dict else betas[sessions[0]]

    def _session_betas(
        self,
        session: str,
        axis: _VoxelAxis,
        nc_threshold: float | None,
        stimuli: str | None,
        streaming: bool,
        nan_policy: str,
    ) -> np.ndarray:
        voxels = axis.selection
        if nc_threshold is not None:
            noise_ceiling = self._noise_ceiling_volume(session, voxels, axis.affine)
            voxels = combine_voxel_mask(
                voxels, noise_ceiling=noise_ceiling, nc_threshold=nc_threshold
            )
        relpath = self._session_file(
            layout.session_betas(self.subject_id, session), f"Betas of {self.subject_id} {session}"
        )
        trials = read_session_trials(self.root, self.subject_id, session)
        if streaming:
            with self.root.readable(relpath) as handle:
                header = read_nifti_header(handle)
            shape, affine = header.shape, header.affine
        else:
            data, image = read_nifti_image(self.root.local_path(relpath))
            data = data[..., np.newaxis] if data.ndim == 3 else data
            shape, affine = data.shape, image.affine
        where = self.root.path(relpath)
        check_betas_grid(
            where,
            shape,
            affine,
            mask_shape=voxels.shape,
            mask_affine=axis.affine,
            mask_file=axis.mask_file,
        )
        n_volumes = shape[3] if len(shape) > 3 else 1
        trial_volume = trial_volumes(
            self.root, self.subject_id, session, table=trials, n_volumes=n_volumes
        )
        volumes = None
        if stimuli is not None:
            chosen = trials["label"].astype(str).str.startswith(f"{stimuli}_").to_numpy()
            volumes = np.sort(trial_volume[chosen])
        if streaming:
            with self.root.readable(relpath) as handle:
                betas = read_masked_betas(handle, voxels, volumes=volumes, progress=True)
        else:
            betas = data[voxels].T
            if volumes is not None:
                betas = betas[volumes]
            betas = np.ascontiguousarray(betas, dtype=np.float32)
        return apply_nan_policy(betas, nan_policy, where)

    def _noise_ceiling_volume(
        self, session: str, selection: np.ndarray, affine: np.ndarray
    ) -> np.ndarray:
        what = f"Noise ceiling of {self.subject_id} {session}"
        relpath = self._session_file(layout.session_noise_ceiling(self.subject_id, session), what)
        return read_on_grid(self.root, relpath, what, selection, affine)

    @fill_doc
    def get_noise_ceiling(
        self,
        session: SessionArg = None,
        desc: str | list[str] | None = None,
        roi: RoiQuery | None = None,
        mask: np.ndarray | None = None,
        mask_source: str = "anatomical",
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Noise ceiling (percent) per selected voxel, float32.

        Give exactly one of ``session`` (per-session map) or ``desc`` (subject-level
        ``"Noiseceiling4rep"``, ``"Noiseceiling12rep"``, ``"NoiseceilingAllrep"``); a list of
        either gives a dict. A ``desc`` the dataset does not ship raises `DataNotDownloadedError`.

        Parameters
        ----------
        %(session)s
        desc
            A subject-level noise ceiling, or a list of them.
        %(roi)s
        %(mask)s
        %(mask_source)s
        """
        if (session is None) == (desc is None):
            raise ParameterError(
                "Pass exactly one of session= (per-session noise ceiling) or desc= (subject-level: "
                f"{', '.join(layout.SUBJECT_NOISE_CEILINGS)})."
            )
        if isinstance(desc, list | tuple):
            return {
                d: cast(  # one desc: one map
                    np.ndarray,
                    self.get_noise_ceiling(desc=d, roi=roi, mask=mask, mask_source=mask_source),
                )
                for d in desc
            }
        selection, affine = self._selection(mask_source, roi, mask)
        if desc is not None:
            if desc not in layout.SUBJECT_NOISE_CEILINGS:
                raise DataNotDownloadedError(
                    f"{self.subject_id} has no subject-level noise ceiling desc-{desc}; the "
                    f"dataset ships {', '.join(layout.SUBJECT_NOISE_CEILINGS)}."
                )
            relpath = layout.subject_noise_ceiling(self.subject_id, desc)
            what = f"Noise ceiling {desc} of {self.subject_id}"
            data = read_on_grid(self.root, relpath, what, selection, affine)
            return np.asarray(data[selection], dtype=np.float32)
        sessions, as_dict = self._sessions(session)
        out = {}
        for ses in sessions:
            data = self._noise_ceiling_volume(ses, selection, affine)
            out[ses] = np.asarray(data[selection], dtype=np.float32)
        return out if as_dict else out[sessions[0]]

    # -- brain space ---------------------------------------------------------------------------

    @fill_doc
    def to_nifti(
        self,
        values: np.ndarray,
        path: str | os.PathLike | None = None,
        roi: RoiQuery | None = None,
        mask: np.ndarray | None = None,
        mask_source: str = "anatomical",
        *,
        output_path: str | os.PathLike | None = None,
    ) -> nib.Nifti1Image:
        """Per-voxel ``values`` (one per selected voxel) as a NIfTI volume on the mask's grid.

        Voxels outside the selection are 0; the affine is the brain mask's.

        Parameters
        ----------
        values
            One value per voxel of the selection, in voxel-axis order.
        path
            Also write the image there (atomically: a failed write, a full disk say, names the
            path and leaves any previous file as it was). None: only return it.
        %(roi)s
        %(mask)s
        %(mask_source)s
        output_path
            laion_fmri's name of ``path`` (``sub.to_nifti(values, output_path=...)``).

        Returns
        -------
        nibabel.Nifti1Image
            The image (also when it was written).
        """
        if path is not None and output_path is not None:
            raise ParameterError("Pass path or output_path (laion_fmri's name of it), not both.")
        path = output_path if path is None else path
        selection, affine = self._selection(mask_source, roi, mask)
        volume = scatter_to_grid(np.asarray(values), selection)
        image = nib.Nifti1Image(volume, affine)
        image.header.set_xyzt_units("mm")
        if path is not None:
            with named_write_errors(path), atomic_path(Path(path)) as tmp:
                nib.save(image, tmp)
        return image

    def get_voxel_coordinates(
        self,
        roi: RoiQuery | None = None,
        mask: np.ndarray | None = None,
        mask_source: str = "anatomical",
    ) -> np.ndarray:
        """Scanner (T1w) coordinates in mm of the selected voxels, ``(n_voxels, 3)``, voxel-axis order."""
        selection, affine = self._selection(mask_source, roi, mask)
        return nib.affines.apply_affine(affine, np.argwhere(selection))

    # -- anatomy ---------------------------------------------------------------------------------

    def has_anatomical(self) -> bool:
        """Whether ``derivatives/anatomical/<subject>/`` exists."""
        return self.root.isdir(layout.ANAT_DIR, self.subject_id)

    def get_anatomical_dir(self) -> Path | str:
        """``derivatives/anatomical/<subject>/`` (a Path for a local root, the URL otherwise)."""
        relpath = f"{layout.ANAT_DIR}/{self.subject_id}"
        if not self.has_anatomical():
            raise DataNotDownloadedError(
                f"The anatomical folder of {self.subject_id} is missing: {self.root.path(relpath)}. {HOW_TO_GET}"
            )
        return Path(self.root.path(relpath)) if self.root.is_local else self.root.path(relpath)

    def has_freesurfer(self) -> bool:
        """Whether the FreeSurfer recon folder ``derivatives/freesurfer/<subject>/`` exists."""
        return self.root.isdir(layout.FREESURFER_DIR, self.subject_id)

    def get_freesurfer_dir(self) -> Path | str:
        """``derivatives/freesurfer/<subject>/`` (a Path for a local root, the URL otherwise)."""
        relpath = f"{layout.FREESURFER_DIR}/{self.subject_id}"
        if not self.has_freesurfer():
            raise DataNotDownloadedError(
                f"The FreeSurfer folder of {self.subject_id} is missing: "
                f"{self.root.path(relpath)}. {HOW_TO_GET}"
            )
        return Path(self.root.path(relpath)) if self.root.is_local else self.root.path(relpath)

    def _anatomical_file(self, relpath: str, what: str) -> Path:
        return self.root.local_path(require(self.root, relpath, f"{what} of {self.subject_id}"))

    def get_t1w(self, res: str | None = None) -> Path:
        """Path of the T1w image (``res=None``: full resolution; ``"1pt8"``: functional grid)."""
        return self._anatomical_file(
            layout.anatomical_image(self.subject_id, "T1w", res), "T1w image"
        )

    def get_t2w(self, res: str | None = None) -> Path:
        """Path of the T2w image (``res=None``: full resolution; ``"1pt8"``: functional grid)."""
        return self._anatomical_file(
            layout.anatomical_image(self.subject_id, "T2w", res), "T2w image"
        )

    def get_anatomical_brain_mask(self, res: str | None = None) -> Path:
        """Path of the anatomical brain mask file (``res=None``: full resolution; ``"1pt8"``)."""
        return self._anatomical_file(
            layout.anatomical_brain_mask(self.subject_id, res), "Brain mask"
        )
