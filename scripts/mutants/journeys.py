"""Mutants of the guards added after a user-path review of 0.4: batches of one subject, epochs
after a resume, evaluation on the data of the fit, run folders, and inputs refused rather than
truncated or dropped."""

from mutants import Mutant

MUTANTS = [
    Mutant(
        "stream-batches-mix-subjects",
        "neurotorch/data/fmri/stream.py",
        "    if len(subjects) > 1 and batch_size > 1:",
        "    if len(subjects) > 1 and batch_size > 10**9:",
        ("tests/test_data_stream.py::test_a_stream_over_several_subjects_is_never_batched",),
    ),
    Mutant(
        "collate-stacks-subjects",
        "neurotorch/data/collate.py",
        "        if len(subjects) > 1:",
        "        if len(subjects) > 2:",
        ("tests/test_data_stream.py::test_a_stream_over_several_subjects_is_never_batched",),
    ),
    Mutant(
        "stream-resume-after-an-ended-pass-replays-it",
        "neurotorch/data/loader.py",
        '        if state_dict["loader"].get("_iterator_finished"):',
        '        if state_dict["loader"].get("_iterator_finished") and False:',
        (
            "tests/test_data_epochs.py::test_a_state_taken_after_an_epoch_ended_resumes_at_the_next_epoch",
        ),
    ),
    Mutant(
        "stream-resume-after-the-last-batch-is-empty",
        "neurotorch/data/loader.py",
        "        return self._unless_spent(batches, then_next=not following) if resumes else batches",
        "        return batches",
        (
            "tests/test_data_epochs.py::test_a_state_taken_after_the_last_batch_resumes_at_the_next_epoch",
        ),
    ),
    Mutant(
        "sampler-resume-after-an-ended-pass-is-empty",
        "neurotorch/data/sampling.py",
        "        finished = yielded >= units_per_rank(len(self._rank_batches(epoch, size)), size)",
        "        finished = False",
        (
            "tests/test_data_epochs.py::test_a_state_taken_after_an_epoch_ended_resumes_at_the_next_epoch",
        ),
    ),
    Mutant(
        "fit-epoch-not-given-to-the-training-loader",
        "neurotorch/lightning/base.py",
        "                loader.start_at_epoch(self._fit_epoch())",
        "                loader.start_at_epoch(0)",
        ("tests/test_data_epochs.py::test_lightning_reshuffles_and_resumes_in_epoch_one",),
    ),
    Mutant(
        "encoder-fitted-voxels-not-compared",
        "neurotorch/models/linear_encoder.py",
        "        if not np.array_equal(selected, self._fitted_voxels):",
        "        if len(selected) != len(self._fitted_voxels):",
        ("tests/test_encoder_end_to_end.py",),
    ),
    Mutant(
        "step-trained-batches-not-counted",
        "neurotorch/models/module.py",
        "        self.trained_batches += 1",
        "        pass",
        (
            "tests/test_verbs.py::test_a_step_trained_model_counts_its_batches_and_evaluates_once_trained",
        ),
    ),
    Mutant(
        "run-folder-overwritten",
        "neurotorch/lightning/cli.py",
        "        if found:\n            raise DatasetExistsError(",
        "        if found and False:\n            raise DatasetExistsError(",
        ("tests/test_verbs.py::test_a_run_never_overwrites_the_files_of_its_folder",),
    ),
    Mutant(
        "lnm-subjects-truncated-to-integers",
        "neurotorch/connectome/lnm.py",
        'else as_ints("subjects", subjects)',
        "else [int(s) for s in subjects]",
        ("tests/test_connectome_lnm_edges.py",),
    ),
    Mutant(
        "sources-of-another-leadfield-projected",
        "neurotorch/meeg/simulation.py",
        "        if sources.n_sources != self.leadfield.shape[1]:",
        "        if sources.n_sources > self.leadfield.shape[1]:",
        ("tests/test_meeg_simulation.py",),
    ),
    Mutant(
        "fiff-code-truncated",
        "neurotorch/meeg/leadfield_data.py",
        "    if scalar is None or not float(scalar).is_integer():",
        "    if scalar is None:",
        ("tests/test_faults_meeg.py",),
    ),
    Mutant(
        "unreadable-folder-skipped",
        "neurotorch/io/storage.py",
        "os.walk(target, onerror=_unreadable_folder)",
        "os.walk(target, onerror=lambda error: None)",
        ("tests/test_remote_storage.py::test_a_folder_that_cannot_be_read_stops_the_listing",),
    ),
    Mutant(
        "misspelt-image-name-dropped",
        "neurotorch/data/fmri/trials.py",
        "        if unseen:",
        "        if unseen and False:",
        (
            "tests/test_data_settings.py::test_image_names_that_no_trial_shows_are_named_not_dropped",
        ),
    ),
    Mutant(
        "grid-criteria-compared-exactly",
        "neurotorch/meeg/grid.py",
        "    if not (numbers and pd.api.types.is_numeric_dtype(column)):",
        "    if True:",
        ("tests/test_meeg_grid.py::test_aggregate_and_calibrate",),
    ),
    Mutant(
        "ddp-grouped-batches-padded-again",
        "neurotorch/data/sampling.py",
        "        return batches if self.drop_last else split_for_ranks(batches, world_size)",
        "        return batches",
        (
            "tests/test_sharding.py::"
            "test_grouped_batch_sampler_gives_ranks_equal_batches_without_a_repeat",
        ),
    ),
    Mutant(
        "transform-closure-and-defaults-ignored",
        "neurotorch/features/transforms.py",
        '        identity["state_sha"] = _state_sha(bound)',
        '        identity["state_sha"] = _state_sha(None)',
        (
            "tests/test_features.py::"
            "test_callables_differing_in_captured_or_default_values_are_other_entries",
        ),
    ),
    Mutant(
        "model-plain-attributes-ignored",
        "neurotorch/features/sources.py",
        "    described = repr((repr(module), sorted(code.items(), key=lambda item: item[0]), plain))",
        "    described = repr((repr(module), sorted(code.items(), key=lambda item: item[0])))",
        ("tests/test_features.py::test_a_changed_key_part_is_another_entry",),
    ),
    Mutant(
        "local-model-files-not-stamped",
        "neurotorch/features/forward.py",
        "            stamps.append((file, status.st_size, status.st_mtime_ns))",
        "            stamps.append((file, 0, 0))",
        ("tests/test_features.py::test_a_local_model_saved_again_is_loaded_again",),
    ),
    Mutant(
        "s3-listings-cached-for-the-process",
        "neurotorch/io/storage.py",
        '    options.setdefault("use_listings_cache", False)',
        "    pass",
        (
            "tests/test_remote_storage.py::"
            "test_an_object_replaced_in_the_store_is_read_anew_in_the_same_process",
        ),
    ),
    Mutant(
        "calibrator-levels-order-unchecked",
        "neurotorch/models/calibrator.py",
        "        if self.levels.size == 0 or np.any(np.diff(self.levels) <= 0):",
        "        if self.levels.size == 0:",
        ("tests/test_meeg_lightning.py::test_calibrators_refuse_levels_out_of_order",),
    ),
    Mutant(
        "batched-sizes-count-batches",
        "neurotorch/lightning/base.py",
        '            return n * int(getattr(dataset, "batch_size", 1)) if batched else n',
        "            return n",
        ("tests/test_meeg_lightning.py::test_sizes_count_items_for_batched_and_item_datasets",),
    ),
    Mutant(
        "feature-image-name-split-into-characters",
        "neurotorch/features/extract.py",
        '    return None if images is None else as_names("images", images)',
        "    return None if images is None else list(images)",
        ("tests/test_features.py::test_rows_follow_the_requested_image_order",),
    ),
    Mutant(
        "not-a-checkpoint-unpickled",
        "neurotorch/lightning/cli.py",
        "        if checkpoint and os.path.isfile(checkpoint) and not _looks_like_a_checkpoint(checkpoint):",
        "        if False:",
        ("tests/test_verbs.py::test_a_file_that_is_not_a_checkpoint_is_named_in_one_line",),
    ),
    Mutant(
        "convert-keeps-other-batch-files",
        "neurotorch/connectome/convert.py",
        "    if others:",
        "    if others and False:",
        ("tests/test_connectome_batches.py::test_convert_reorients_and_matches_nibabel",),
    ),
    Mutant(
        "lnm-units-keep-the-connectome-first-opened",
        "neurotorch/connectome/lnm_units.py",
        "        return _open_connectome(self.files, self.storage_options, self.space, self.fingerprint)",
        '        return _open_connectome(self.files, self.storage_options, self.space, "")',
        (
            "tests/test_parallel_commands.py::test_a_connectome_recreated_at_the_same_paths_is_read_afresh",
        ),
    ),
    Mutant(
        "hdf5-filter-order-ignored",
        "neurotorch/connectome/batches.py",
        "    return pipeline in _DIRECT_PIPELINES",
        "    return set(pipeline) in [set(p) for p in _DIRECT_PIPELINES]",
        ("tests/test_connectome_batches.py::test_direct_inflate_and_h5py_fallback_read_like_h5py",),
    ),
    Mutant(
        "lnm-out-may-be-the-working-folder",
        "neurotorch/connectome/outputs.py",
        "    if path.resolve() in (Path.cwd(), *Path.cwd().parents):",
        "    if False:",
        (
            "tests/test_connectome_outputs.py::test_lnm_command_refuses_the_folder_it_runs_in_before_any_work",
        ),
    ),
    Mutant(
        "lesions-reoriented-to-ras-not-to-the-connectome",
        "neurotorch/connectome/lesions.py",
        "        aligned = oriented_like(img, connectome.affine, name)",
        "        aligned = oriented_like(img, np.eye(4), name)",
        (
            "tests/test_connectome_lnm.py::test_a_connectome_stored_las_maps_its_lesions_on_its_own_grid",
        ),
    ),
    Mutant(
        "roi-and-noise-ceiling-affine-unchecked",
        "neurotorch/fmri/masks.py",
        "    check_affine(own_affine, affine, where)\n",
        "",
        ("tests/test_faults_fmri_data.py",),
    ),
    Mutant(
        "fresh-batches-count-passes-per-process",
        "neurotorch/data/sharding.py",
        "        slot = 1 if info is None else 2 + info.id\n        passes = int(state[slot])\n        state[slot] = passes + 1",
        '        passes = self.__dict__.get("_passes", 0)\n        self.__dict__["_passes"] = passes + 1',
        ("tests/test_sharding.py::test_fresh_data_every_pass_in_a_plain_dataloader",),
    ),
    Mutant(
        "load-dataset-validation-streams-fresh",
        "neurotorch/data/builders.py",
        '    return {"fresh_each_epoch": split in (None, "train"), **config}',
        "    return config",
        ("tests/test_sharding.py::test_load_dataset_streams_fresh_trials_for_training_only",),
    ),
    Mutant(
        "trials-in-table-row-order",
        "neurotorch/data/fmri/trials.py",
        '    return trials.sort_values("trial", kind="stable", ignore_index=True)',
        "    return trials",
        ("tests/test_fmri_beta_index.py::test_datasets_serve_each_trial_its_own_volume",),
    ),
    Mutant(
        "synthetic-reused-with-files-missing",
        "neurotorch/synthetic/_once.py",
        "    if not overwrite and _reusable(root, params, info_relpath):",
        "    if not overwrite and _written_with(root / info_relpath, params):",
        ("tests/test_cli_errors.py::test_synth_says_when_the_dataset_is_already_there",),
    ),
    Mutant(
        "checkpoint-hyperparameters-override-the-command-line",
        "neurotorch/lightning/cli.py",
        "                chosen[key] = value\n",
        "                pass\n",
        ("tests/test_verbs.py::test_model_options_on_the_command_line_win_over_the_checkpoint",),
    ),
    Mutant(
        "batched-simulations-pad-ranks",
        "neurotorch/data/meeg/simulation.py",
        "        return split_for_ranks(whole, world_size)",
        "        return whole",
        (
            "tests/test_sharding.py::test_batched_simulations_halve_batches_for_ranks_and_serve_each_trial_once",
        ),
    ),
    Mutant(
        "hooked-output-kept-by-reference",
        "neurotorch/features/forward.py",
        "                self.outputs[name] = layer_tensor(output, name).clone()",
        "                self.outputs[name] = layer_tensor(output, name)",
        (
            "tests/test_features.py::test_a_layer_whose_output_is_changed_in_place_later_keeps_its_own",
        ),
    ),
    Mutant(
        "image-features-model-output-not-unwrapped",
        "neurotorch/features/sources.py",
        '            return getattr(features, "pooler_output", features)',
        "            return features",
        ("tests/test_features_sources.py::test_a_clip_model_gives_its_projected_image_embedding",),
    ),
    Mutant(
        "shared-penalty-averages-undefined-scores",
        "neurotorch/models/ridge.py",
        "        shared = scores[:, scored].mean(1) if bool(scored.any()) else scores.mean(1)",
        "        shared = scores.mean(1)",
        ("tests/test_encoder_ridge.py::test_a_constant_target_does_not_choose_the_shared_penalty",),
    ),
    Mutant(
        "encoder-without-validation-never-fitted",
        "neurotorch/models/linear_encoder.py",
        "        if self._stats is not None and not sum(self.trainer.num_val_batches):",
        "        if False:",
        (
            "tests/test_encoder_end_to_end.py::test_without_a_validation_part_the_fit_uses_the_training_trials",
        ),
    ),
    Mutant(
        "transform-globals-not-in-the-key",
        "neurotorch/features/transforms.py",
        "    if globals_read:  # only then: keys of transforms that read none stay as they were",
        "    if False:",
        ("tests/test_features.py::test_a_callable_reading_a_changed_global_is_another_entry",),
    ),
    Mutant(
        "restart-at-an-epochs-end-serves-the-restored-epoch",
        "neurotorch/lightning/base.py",
        "        if drawn and drawn >= _batches_per_epoch(trainer, loader):",
        "        if False:",
        (
            "tests/test_data_epochs.py::test_a_fit_by_steps_resumed_at_an_epochs_end_trains_the_uninterrupted_batches",
        ),
    ),
    Mutant(
        "stream-ignores-an-empty-pass",
        "neurotorch/data/loader.py",
        "            if epoch is None or ended == epoch:",
        "            if ended is not None and ended == epoch:",
        (
            "tests/test_data_epochs.py::test_a_fit_by_steps_resumed_at_an_epochs_end_trains_the_uninterrupted_batches",
        ),
    ),
    Mutant(
        "encoder-fits-at-a-mid-epoch-validation",
        "neurotorch/models/linear_encoder.py",
        "            and every < trainer.num_training_batches",
        "            and every < 0",
        ("tests/test_encoder_end_to_end.py::test_validation_inside_the_training_epoch_is_refused",),
    ),
    Mutant(
        "finished-grid-manifest-not-rewritten",
        "neurotorch/meeg/grid.py",
        "        elif finish and not (Path(self.out_dir) / MANIFEST).is_file():  # deleted since: again",
        "        elif False:",
        (
            "tests/test_meeg_grid_units.py::test_a_finished_grid_whose_manifest_was_deleted_writes_it_again",
        ),
    ),
    Mutant(
        "eloreta-covariance-with-unit-lambda",
        "neurotorch/meeg/solvers/eloreta.py",
        "            sensor_noise_var=per_sensor(noise * self.lambda2, y),  # the model's: λσ²",
        "            sensor_noise_var=per_sensor(noise, y),",
        ("tests/test_meeg_solvers.py::test_eloreta_full_covariance_is_that_of_its_gaussian_model",),
    ),
    Mutant(
        "run-folder-check-skips-checkpoints",
        "neurotorch/lightning/cli.py",
        '    "checkpoints/*.ckpt",\n',
        "",
        ("tests/test_verbs.py::test_a_run_never_overwrites_the_files_of_its_folder",),
    ),
    Mutant(
        "p-maps-zero-outside-the-brain",
        "neurotorch/connectome/result.py",
        "        outside = 1.0 if kind in P_VALUE_KINDS else 0.0",
        "        outside = 0.0",
        ("tests/test_connectome_lnm.py::test_p_maps_are_not_significant_outside_the_brain",),
    ),
]
