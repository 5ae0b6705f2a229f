"""Mutants of the shared mechanisms and of the fMRI, M/EEG and I/O code of 0.1–0.3."""

from mutants import Mutant

MUTANTS = [
    Mutant(
        "worker-remainder-dropped",
        "neurotorch/data/sharding.py",
        "    return mine[batch_runs[0] * batch_size : (batch_runs[-1] + 1) * batch_size]",
        "    return mine[batch_runs[0] * batch_size : (batch_runs[-1] + 1) * batch_size]"
        "[: per_rank // batch_size * batch_size or None]",
        (
            "tests/test_sharding.py",
            "tests/test_exactly_once.py::test_one_process_sees_every_item_once",
        ),
    ),
    Mutant(
        "rank-padding-removed",
        "neurotorch/data/sharding.py",
        "    mine = np.arange(rank * per_rank, (rank + 1) * per_rank) % n",
        "    mine = np.arange(rank * per_rank, min((rank + 1) * per_rank, n))",
        ("tests/test_sharding.py",),
    ),
    Mutant(
        "grouped-padding-removed",
        "neurotorch/data/sampling.py",
        "        for k in shard_positions(len(batches), rank, size):",
        "        for k in shard_positions(len(batches), rank, size, drop_last=True):",
        ("tests/test_sharding.py",),
    ),
    Mutant(
        "workers-not-batch-aligned",
        "neurotorch/data/loader.py",
        "            dataset.batch_size, dataset.drop_last = check_batch_size(batch_size), drop_last",
        "            dataset.drop_last = drop_last",
        ("tests/test_exactly_once.py::test_one_process_sees_every_item_once",),
    ),
    Mutant(
        "rank-not-pinned-for-workers",
        "neurotorch/data/loader.py",
        "        self.dataset.pin_shard()\n",
        "",
        ("tests/test_sharding.py::test_workers_of_a_spawned_rank_read_that_ranks_shard",),
    ),
    Mutant(
        "float-scaling-in-float32",
        "neurotorch/io/nifti.py",
        "        return np.result_type(dtype, np.float64)",
        "        return np.result_type(dtype, np.float32)",
        ("tests/test_io_nifti_header.py",),
    ),
    Mutant(
        "qfac-ignored",
        "neurotorch/io/nifti_header.py",
        "        zooms[2] *= pixdim[0]  # qfac: -1 flips the third axis",
        "",
        ("tests/test_io_nifti_header.py",),
    ),
    Mutant(
        "store-session-rebuilt-every-call",
        "neurotorch/data/fmri/store.py",
        "    if found is None or any(found.get(key) != value for key, value in expected.items()):",
        "    if True:",
        ("tests/test_data_store.py::test_touching_the_source_or_changing_the_mask_rebuilds",),
    ),
    Mutant(
        "network-map-subjects-ignored",
        "neurotorch/connectome/lnm.py",
        "    subjects = _checked_subjects(subjects, batches.n_subjects)",
        "    subjects = _checked_subjects(None, batches.n_subjects)",
        ("tests/test_connectome_lnm_edges.py::test_subject_subset_matches_a_direct_computation",),
    ),
    Mutant(
        "batch-out-of-sampler-order",
        "neurotorch/data/fmri/betas.py",
        "    out[targets] = block",
        "    out[: len(targets)] = block",
        ("tests/test_data_betas.py::test_a_batch_comes_back_in_the_order_asked_for",),
    ),
    Mutant(
        "eloreta-noise-applied-twice",
        "neurotorch/meeg/eloreta.py",
        "    blocks = noise_var[:, None, None, None] * operator.unit_blocks",
        "    blocks = noise_var[:, None, None, None] ** 2 * operator.unit_blocks",
        ("tests/test_meeg_solvers.py",),
    ),
    Mutant(
        "eloreta-weights-not-normalised",
        "neurotorch/meeg/eloreta.py",
        "    return prior * (n_sensors / torch.trace(_sensor_cov(blocks, prior)))",
        "    return prior",
        ("tests/test_meeg_solvers.py",),
    ),
    Mutant(
        "gamma-map-free-gamma-not-shared",
        "neurotorch/meeg/sparse_bayes.py",
        "    new = (numer / root / k).repeat_interleave(k, dim=1).clamp_min(0.0)",
        "    new = (numer / root).repeat_interleave(k, dim=1).clamp_min(0.0)",
        ("tests/test_meeg_calibrain_interop.py::test_gamma_map_posterior_against_calibrain",),
    ),
    Mutant(
        "gamma-map-variance-internal-units",
        "neurotorch/meeg/sparse_bayes.py",
        "    var_scale = (scale**2).reshape(-1, *[1] * (posterior.var.ndim - 1))",
        "    var_scale = scale.reshape(-1, *[1] * (posterior.var.ndim - 1))",
        ("tests/test_meeg_solvers.py",),
    ),
    Mutant(
        "gamma-map-noise-update-without-root",
        "neurotorch/meeg/sparse_bayes.py",
        "        (numer_noise.clamp_min(0.0) / diag.clamp_min(_LAMBDA_FLOOR)).sqrt(),",
        "        (numer_noise.clamp_min(0.0) / diag.clamp_min(_LAMBDA_FLOOR)),",
        (
            "tests/test_meeg_calibrain_interop.py::test_gamma_map_with_learned_sensor_noise_against_calibrain",
        ),
    ),
    Mutant(
        "sflex-prior-without-basis",
        "neurotorch/meeg/sparse_bayes.py",
        '        prior = torch.einsum("nj,bjk->bnk", basis**2, prior)',
        '        prior = torch.einsum("nj,bjk->bnk", basis, prior)',
        ("tests/test_meeg_solvers.py",),
    ),
]
