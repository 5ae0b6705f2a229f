"""Checks that the files of one session agree: betas grid and affine against the brain mask, and
one trials-table row (with its own ``beta_index``) per beta volume.

Every reader of betas runs them when it opens a session, so a mismatch surfaces as a named error
before any array is served. `trial_volumes` is the one place that pairs trials with volumes: the
row whose ``beta_index`` is ``v`` is the trial of volume ``v``, whatever the row order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neurotorch.errors import FormatError, ShapeMismatchError
from neurotorch.fmri import layout
from neurotorch.fmri.datafiles import check_integer_column, read_table, require
from neurotorch.fmri.masks import brain_mask_file, check_affine, check_grid
from neurotorch.io.nifti import NiftiHeader, read_nifti_header
from neurotorch.io.storage import DataRoot


def check_betas_grid(
    where: str,
    shape: tuple[int, ...],
    affine: np.ndarray,
    mask_shape: tuple[int, ...],
    mask_affine: np.ndarray,
    mask_file: str,
) -> None:
    """`ShapeMismatchError` naming both files unless the betas file ``where`` lies on the mask's grid."""
    reference = f"the brain mask {mask_file}"
    check_grid(shape, mask_shape, f"The betas file {where}", reference=reference)
    check_affine(affine, mask_affine, f"The betas file {where}", reference=reference)


def check_trial_count(
    root: DataRoot, subject: str, session: str, n_volumes: int, n_trials: int
) -> None:
    """`ShapeMismatchError` naming both files unless the trials table has one row per volume."""
    if n_trials != n_volumes:
        betas = root.path(layout.session_betas(subject, session))
        trials = root.path(layout.session_trials(subject, session))
        raise ShapeMismatchError(
            f"{betas} has {n_volumes} volumes but its trials table {trials} has {n_trials} rows, "
            "so trials cannot be paired with betas; re-download the session."
        )


def check_beta_index(table: pd.DataFrame, where: str, n_volumes: int | None = None) -> None:
    """Each ``beta_index`` of a trials table is an integer and occurs once (and names a volume, if
    ``n_volumes``)."""
    check_integer_column(table, "beta_index", where)
    index = table["beta_index"]
    repeated = index.duplicated()
    if repeated.any():
        raise FormatError(
            f"{where} gives beta_index {int(index[repeated].iloc[0])} to more than one trial, so "
            "two trials would share one beta volume; re-download the trials table."
        )
    if n_volumes is not None and len(index) and (index.min() < 0 or index.max() >= n_volumes):
        raise ShapeMismatchError(
            f"{where} has beta_index values from {int(index.min())} to {int(index.max())}, but the "
            f"betas file has volumes 0..{n_volumes - 1}; re-download the session."
        )


def trial_volumes(
    root: DataRoot, subject: str, session: str, table: pd.DataFrame, n_volumes: int
) -> np.ndarray:
    """The beta volume of each row of a session's trials table: its ``beta_index``, checked.

    The betas file holds one volume per trial; rows may come in any order (by run, by
    presentation), so trials are paired with volumes by ``beta_index``, never by row position.
    The table must name every volume ``0 … n_volumes-1`` exactly once: as many rows as volumes,
    no ``beta_index`` repeated, none out of range.

    Raises
    ------
    ShapeMismatchError
        Rows and volumes differ in number, or a ``beta_index`` names no volume (both files named).
    FormatError
        A ``beta_index`` is repeated.
    """
    check_trial_count(root, subject, session, n_volumes=n_volumes, n_trials=len(table))
    check_beta_index(table, root.path(layout.session_trials(subject, session)), n_volumes)
    return table["beta_index"].to_numpy(np.int64)


def read_session_trials(root: DataRoot, subject: str, session: str) -> pd.DataFrame:
    """A session's trials table, with the columns every reader needs (``layout.TRIAL_COLUMNS``);
    `FormatError` if it has no trial rows."""
    relpath = layout.session_trials(subject, session)
    table = read_table(
        root,
        relpath,
        f"Trials table of {subject} {session}",
        columns=layout.TRIAL_COLUMNS,
        sep="\t",
        keep_default_na=False,
        dtype={"label": str},
    )
    if table.empty:
        raise FormatError(f"{root.path(relpath)} has a header but no trial rows; re-download it.")
    return table


def check_session_trials(root: DataRoot, subject: str, session: str, n_volumes: int) -> None:
    """Read the session's trials table and check it against a betas file of ``n_volumes``."""
    trial_volumes(
        root,
        subject,
        session,
        table=read_session_trials(root, subject, session),
        n_volumes=n_volumes,
    )


def session_n_volumes(root: DataRoot, subject: str, session: str) -> int:
    """Number of volumes of a session's betas file, from its header."""
    relpath = require(root, layout.session_betas(subject, session), f"Betas of {subject} {session}")
    return _header(root, relpath).n_volumes


def _header(root: DataRoot, relpath: str) -> NiftiHeader:
    with root.readable(relpath) as source:
        return read_nifti_header(source)


def check_session_files(
    root: DataRoot, subject: str, session: str, selection: np.ndarray, mask_source: str
) -> NiftiHeader:
    """Check a session's betas file against the brain mask and its trials table; return its header.

    Reads only headers and the trials table: the betas grid and affine must equal those of the
    ``mask_source`` brain mask (on whose grid ``selection`` lies) and the trials table must have
    one row, with a distinct in-range ``beta_index``, per volume.
    """
    relpath = require(root, layout.session_betas(subject, session), f"Betas of {subject} {session}")
    header = _header(root, relpath)
    mask_file = brain_mask_file(subject, mask_source)
    mask_affine = _header(root, mask_file).affine
    check_betas_grid(
        root.path(relpath),
        header.shape,
        header.affine,
        mask_shape=selection.shape,
        mask_affine=mask_affine,
        mask_file=root.path(mask_file),
    )
    check_session_trials(root, subject, session, n_volumes=header.n_volumes)
    return header
