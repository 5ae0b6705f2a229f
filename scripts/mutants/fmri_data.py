"""Mutants of the fMRI data layer and the shared loader mechanisms (epochs, resume, sharding
counts, the prepared store, the voxel axis, trial selections, mixed-subject batches)."""

from mutants import Mutant

EPOCHS = "tests/test_data_epochs.py"
STORE = "tests/test_data_store.py"

MUTANTS = [
    Mutant(
        "stream-batch-copied-again-at-collate",
        "neurotorch/data/fmri/stream.py",
        "        batch = BatchRows(self.batch_size) if self.batch_size > 1 else None\n",
        "        batch = None\n",
        ("tests/test_data_stream.py::test_a_batched_stream_writes_each_trial_into_its_batch",),
    ),
    Mutant(
        "stream-loader-never-advances-epoch",
        "neurotorch/data/loader.py",
        "            if not self._restored:\n"
        "                self.dataset.set_epoch(self._epochs_started)\n",
        "            pass\n",
        (f"{EPOCHS}::test_stream_loader_moves_to_the_next_epoch_at_every_pass",),
    ),
    Mutant(
        "resumed-stream-restarts-the-epoch-count",
        "neurotorch/data/loader.py",
        "            if not self._restored:\n"
        "                self.dataset.set_epoch(self._epochs_started)\n",
        "            self.dataset.set_epoch(self._epochs_started)\n",
        (f"{EPOCHS}::test_stream_resumed_in_epoch_one_continues_that_epoch",),
    ),
    Mutant(
        "resumed-map-pass-in-epoch-0-order",
        "neurotorch/data/sampling.py",
        "        self.set_epoch(epoch + 1 if finished else epoch)",
        "        self.set_epoch(0)",
        (f"{EPOCHS}::test_map_resumed_in_epoch_one_continues_that_epoch",),
    ),
    Mutant(
        "grouped-sampler-same-order-every-epoch",
        "neurotorch/data/sampling.py",
        "        if self._passes and not self._epoch_was_set:  # nobody sets epochs: move on by itself\n"
        "            self.epoch += 1",
        "        if self._passes and not self._epoch_was_set:  # nobody sets epochs: move on by itself\n"
        "            pass",
        (f"{EPOCHS}::test_map_loader_reshuffles_every_epoch_without_set_epoch",),
    ),
    Mutant(
        "batches-per-rank-drop-last-rounds-up",
        "neurotorch/data/sharding.py",
        "    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)",
        "    return -(-per_rank // batch_size)",
        ("tests/test_sharding.py",),
    ),
    Mutant(
        "store-manifest-checks-the-source-only",
        "neurotorch/data/fmri/store.py",
        "    if found is None or any(found.get(key) != value for key, value in expected.items()):",
        '    if found is None or found.get("source") != expected["source"]:',
        (f"{STORE}::test_a_manifest_of_another_format_version_mask_or_dtype_rebuilds",),
    ),
    Mutant(  # freshness keyed by every session of the subject: one change rebuilds them all
        "store-one-changed-session-rebuilds-all",
        "neurotorch/data/fmri/store.py",
        "    manifest.update(mask_sha256=mask_hash(voxel_mask), dtype=dtype, values=values)",
        "    manifest.update(mask_sha256=mask_hash(voxel_mask), dtype=dtype, values=values)\n"
        "    manifest['sources'] = [\n"
        "        source_identity(root, layout.session_betas(subject, s)) for s in sessions\n"
        "    ]",
        (f"{STORE}::test_touching_the_source_or_changing_the_mask_rebuilds",),
    ),
    Mutant(
        "store-statistics-not-checked-on-build",
        "neurotorch/data/fmri/store.py",
        "    checks = {store.betas_path: store.betas_damage, store.stats_path: store.stats_damage}",
        "    checks = {store.betas_path: store.betas_damage}",
        (f"{STORE}::test_statistics_copied_from_another_session_are_detected",),
    ),
    Mutant(
        "store-statistics-served-unchecked",
        "neurotorch/data/fmri/store.py",
        "        problem = self.stats_damage(self.manifest())",
        "        problem = None",
        (f"{STORE}::test_statistics_copied_from_another_session_are_detected",),
    ),
    Mutant(
        "float16-cast-unchecked",
        "neurotorch/data/fmri/store.py",
        "                _check_range(row, values, root.path(relpath))\n",
        "",
        (f"{STORE}::test_float16_store_refuses_betas_beyond_its_range",),
    ),
    Mutant(
        "mixed-subject-batch-not-refused",
        "neurotorch/data/fmri/betas.py",
        "        if len(subjects) > 1:\n            raise self._mixed_batch_error",
        "        if False:\n            raise self._mixed_batch_error",
        ("tests/test_data_betas.py::test_a_batch_that_mixes_subjects_is_refused_by_name",),
    ),
    Mutant(
        "voxel-table-from-brain-and-rois-alone",
        "neurotorch/fmri/voxel_table.py",
        "    selected, affine = voxel_selection_on_grid(root, subject, selection)",
        "    selected, affine = voxel_selection_on_grid(\n"
        "        root, subject, type(selection)(roi=selection.roi, mask_source=selection.mask_source)\n"
        "    )",
        ("tests/test_data_module.py",),
    ),
    Mutant(
        "sessions-string-split-into-characters",
        "neurotorch/data/fmri/trials.py",
        '    ids = [layout.session_id(s) for s in as_names("sessions", sessions)]',
        "    ids = [layout.session_id(s) for s in sessions]",
        ("tests/test_data_settings.py::test_a_string_is_one_name_everywhere",),
    ),
    Mutant(
        "validation-images-left-in-train",
        "neurotorch/data/fmri/trials.py",
        '        return set(kept if self.part == "train" else held_out)',
        '        return set(train if self.part == "train" else held_out)',
        ("tests/test_data_settings.py::test_parts_of_a_split_with_a_validation_share",),
    ),
]
