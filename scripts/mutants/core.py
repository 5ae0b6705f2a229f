"""Mutants of the shared mechanisms and of the fMRI, M/EEG and I/O code of 0.1–0.3."""

from mutants import Mutant

MUTANTS = [
    Mutant(
        "worker-remainder-dropped",
        "neurotorch/data/sharding.py",
        "    return mine[first * batch_size : (first + count) * batch_size]",
        "    return mine[first * batch_size : (first + count) * batch_size]"
        "[: per_rank // batch_size * batch_size or None]",
        (
            "tests/test_sharding.py",
            "tests/test_exactly_once.py::test_one_process_sees_every_item_once",
        ),
    ),
    Mutant(
        "longer-worker-runs-first",
        "neurotorch/data/sharding.py",
        "    first = worker * base + max(0, worker - (num_workers - extra))\n"
        "    count = base + (worker >= num_workers - extra)",
        "    first = worker * base + min(worker, extra)\n    count = base + (worker < extra)",
        ("tests/test_sharding.py",),
    ),
    Mutant(
        "resume-count-reset-at-the-first-item",
        "neurotorch/data/sharding.py",
        "        return self._counted(self._items_after(skip))",
        "        yield from self._counted(self._items_after(skip))",
        (
            "tests/test_data_epochs.py::test_stream_resumed_in_epoch_one_continues_that_epoch",
            "tests/test_data_epochs.py::test_lightning_reshuffles_and_resumes_in_epoch_one",
        ),
    ),
    Mutant(
        "resume-point-not-counted",
        "neurotorch/data/sharding.py",
        "            self._yielded += 1\n",
        "            pass\n",
        ("tests/test_connectome_epochs.py::test_datamodule_loader_resumes_by_hand",),
    ),
    Mutant(
        "restored-simulation-draws-more-than-it-yields",
        "neurotorch/data/meeg/simulation.py",
        "        for p in shard(len(pieces), rank, world_size, worker, num_workers)[skip:]:",
        "        for p in shard(len(pieces), rank, world_size, worker, num_workers)[skip:]:\n"
        "            self._batch(self.batch_size, self.simulation.generator(self.seed, 0))",
        (
            "tests/test_meeg_epochs.py::test_a_restored_stream_draws_only_the_batches_it_still_yields",
        ),
    ),
    Mutant(
        "stream-resumes-in-another-shard",
        "neurotorch/data/sharding.py",
        "            if any(saved[k] != now[k] for k in saved):",
        "            if False:",
        (
            "tests/test_data_epochs.py::"
            "test_a_stream_refuses_the_state_of_another_world_size_or_batch_size",
        ),
    ),
    Mutant(
        "map-style-resumes-in-another-shard",
        "neurotorch/data/sampling.py",
        "        if yielded and not finished and saved != (size, self.batch_size):",
        "        if False:",
        (
            "tests/test_data_epochs.py::"
            "test_a_map_style_pass_refuses_the_state_of_another_world_size_or_batch_size",
        ),
    ),
    Mutant(
        "map-style-state-of-other-workers-left-to-torchdata",
        "neurotorch/data/loader.py",
        "        if not finished and saved_workers == self.num_workers:",
        "        if not finished:",
        (
            "tests/test_data_epochs.py::test_a_map_style_pass_resumes_with_another_number_of_workers",
        ),
    ),
    Mutant(
        "stream-decodes-a-buffer-being-refilled",
        "neurotorch/io/nifti.py",
        "raw_volumes = _volume_bytes(reader, header, everything, n_buffers=buffers)",
        "raw_volumes = _volume_bytes(reader, header, everything, n_buffers=1)",
        ("tests/test_io_nifti.py",),
    ),
    Mutant(
        "seek-range-stops-one-volume-early",
        "neurotorch/data/fmri/stream.py",
        "iter_volume_range(path, first, last + 1, mask=mask, threads=cores)",
        "iter_volume_range(path, first, last, mask=mask, threads=cores)",
        ("tests/test_read_ahead_trainer.py",),
    ),
    Mutant(
        "forked-reader-closes-the-parents-thread",
        "neurotorch/io/nifti.py",
        "        if inflated is not None and os.getpid() == owner:",
        "        if inflated is not None:",
        ("tests/test_io_nifti.py::test_iterator_refuses_to_resume_after_fork",),
    ),
    Mutant(
        "seek-range-decodes-a-buffer-being-refilled",
        "neurotorch/io/seek_index.py",
        "path=path, n_buffers=buffers)",
        "path=path, n_buffers=1)",
        ("tests/test_io_nifti_seek_index.py",),
    ),
    Mutant(
        "collate-copies-one-item-twice",
        "neurotorch/data/collate.py",
        "            target[k] = value.numpy()",
        "            target[max(k, 1)] = value.numpy()",
        ("tests/test_collate.py",),
    ),
    Mutant(
        "mixed-dtypes-cast-to-the-first",
        "neurotorch/data/collate.py",
        "            if _stackable(values) and len({v.dtype for v in values}) == 1:",
        "            if _stackable(values):",
        ("tests/test_collate.py",),
    ),
    Mutant(
        "cores-of-the-machine-not-of-the-process",
        "neurotorch/config.py",
        "        return max(1, len(os.sched_getaffinity(0)))",
        "        return os.cpu_count() or 1",
        ("tests/test_io_nifti.py::test_the_default_cores_are_those_the_process_may_run_on",),
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
        "            dataset.set_batching(batch_size, drop_last)",
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
