"""Mutants of feature extraction (0.4.0): pooling, projections, PCA, preprocessing, the cache key,
chunk verification and resume, ranks, row order, offline errors, worker processes."""

from mutants import Mutant

FEATURES = "tests/test_features.py"
SOURCES = "tests/test_features_sources.py"
RUNS = "tests/test_features_runs.py"
FAULTS = "tests/test_faults_features.py"
POOLING = "neurotorch/features/pooling.py"
EXTRACT = "neurotorch/features/extract.py"
DIRECT = f"{FEATURES}::test_cached_features_equal_a_direct_forward_pass"
CHANGED = f"{FEATURES}::test_a_changed_key_part_is_another_entry"
DATA = "tests/test_features_data.py"
PAIRING = "neurotorch/data/fmri/pairing.py"

MUTANTS = [
    Mutant(
        "features-avg-is-max",
        POOLING,
        "            return x.mean(dim=(2, 3))",
        "            return x.amax(dim=(2, 3))",
        (DIRECT,),
    ),
    Mutant(
        "features-token-avg-drops-cls",
        POOLING,
        "            return x.mean(dim=1)",
        "            return x[:, 1:].mean(dim=1)",
        (DIRECT,),
    ),
    Mutant(
        "features-cls-last-token",
        POOLING,
        "            return x[:, 0]",
        "            return x[:, -1]",
        (DIRECT,),
    ),
    Mutant(
        "features-projection-unscaled",
        POOLING,
        "    return rng.standard_normal((dim, k), dtype=np.float32) / np.float32(np.sqrt(k))",
        "    return rng.standard_normal((dim, k), dtype=np.float32)",
        (f"{FEATURES}::test_random_projection_matches_its_documented_matrix",),
    ),
    Mutant(
        "features-projection-seed-ignored",
        POOLING,
        '    """The ``(dim, k)`` float32 matrix of ``pooling="random_projection"`` (see the module\n'
        '    docstring)."""\n    rng = np.random.default_rng(seed)',
        '    """The ``(dim, k)`` float32 matrix of ``pooling="random_projection"`` (see the module\n'
        '    docstring)."""\n    rng = np.random.default_rng(0)',
        (f"{FEATURES}::test_random_projection_matches_its_documented_matrix",),
    ),
    Mutant(
        "features-pca-not-centred",
        POOLING,
        "    _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)",
        "    _, singular, vh = torch.linalg.svd(x, full_matrices=False)",
        (f"{FEATURES}::test_pca_matches_scikit_learn_on_the_documented_sample",),
    ),
    Mutant(
        "features-pca-sign-convention-dropped",
        POOLING,
        "    components = components * signs[:, None]\n",
        "",
        (f"{FEATURES}::test_pca_matches_scikit_learn_on_the_documented_sample",),
    ),
    Mutant(
        "features-pca-other-sample",
        "neurotorch/features/units.py",
        "            rows = pca_sample_rows(n_images, pca_images, seed)",
        "            rows = pca_sample_rows(n_images, pca_images, seed + 1)",
        (f"{FEATURES}::test_pca_matches_scikit_learn_on_the_documented_sample",),
    ),
    Mutant(
        "features-crop-axes-swapped",
        "neurotorch/features/spec.py",
        "        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2",
        "        left, top = (size[1] - self.crop) // 2, (size[0] - self.crop) // 2",
        (f"{FEATURES}::test_image_transform_follows_its_documented_steps",),
    ),
    Mutant(
        "features-rows-in-sorted-order",
        EXTRACT,
        "        rows = np.arange(len(stimuli.images)) if images is None else stimuli.rows(images)",
        "        rows = np.arange(len(stimuli.images)) if images is None else np.sort(stimuli.rows(images))",
        (f"{FEATURES}::test_rows_follow_the_requested_image_order",),
    ),
    Mutant(
        "features-weights-not-in-key",
        "neurotorch/features/sources.py",
        '        "weights_sha": weights_digest(module),',
        '        "weights_sha": None,',
        (CHANGED,),
    ),
    Mutant(
        "features-transform-not-in-key",
        EXTRACT,
        '                "transform": identity["transform"],',
        '                "transform": None,',
        (CHANGED,),
    ),
    Mutant(
        "features-stimulus-file-version-ignored",
        EXTRACT,
        '        "images_file": {"size": int(info["size"]), "version": str(info["version"])},',
        '        "images_file": {"size": int(info["size"])},',
        (CHANGED,),
    ),
    Mutant(
        "features-chunk-crc-not-checked",
        "neurotorch/features/cache.py",
        '        if len(data) != record.get("size") or _crc32(data) != record.get("crc32"):',
        '        if len(data) != record.get("size"):',
        (f"{FEATURES}::test_a_damaged_chunk_is_recomputed_with_a_warning",),
    ),
    Mutant(
        "features-finished-chunks-recomputed",
        "neurotorch/features/units.py",
        "            if not entry.has_chunk(self.chunk, self.rows)\n        ]\n\n    def done",
        "        ]\n\n    def done",
        (f"{FEATURES}::test_a_second_run_reads_the_cache_and_computes_nothing", RUNS),
    ),
    Mutant(
        "features-ranks-take-others-chunks",
        EXTRACT,
        "    own = [c for c in chunks if c % world_size == rank]",
        "    own = [c for c in chunks if c % world_size != rank]",
        (f"{FEATURES}::test_ranks_take_their_own_chunks_first",),
    ),
    Mutant(
        "features-extract-does-every-rank",
        EXTRACT,
        "        help_others=False,",
        "        help_others=True,",
        (f"{FEATURES}::test_ranks_take_their_own_chunks_first",),
    ),
    Mutant(
        "features-manifest-before-the-last-chunk",
        EXTRACT,
        "            if entry.manifest() is None and set(entry.chunks_present()) >= set(\n"
        "                range(len(job.spans))\n            ):",
        "            if entry.manifest() is None:",
        (f"{FEATURES}::test_a_subset_computes_only_its_chunks_and_the_rest_later",),
    ),
    Mutant(
        "features-layer-that-runs-twice-accepted",
        "neurotorch/features/forward.py",
        "                        if capture.calls.get(layer) != 1:",
        "                        if not capture.calls.get(layer):",
        (f"{FAULTS}::test_fault[a layer that runs twice]",),
    ),
    Mutant(
        "features-cache-inside-the-dataset",
        EXTRACT,
        "    if root.is_local and folder.resolve().is_relative_to(Path(root.url)):",
        "    if False:",
        (f"{FAULTS}::test_fault[cache inside the dataset folder]",),
    ),
    Mutant(
        "features-offline-error-without-advice",
        "neurotorch/features/sources.py",
        '        f"{what} is not on this machine and could not be downloaded ({first}). {how} "',
        '        f"{what} is not on this machine and could not be downloaded ({first}). "',
        (f"{SOURCES}::test_offline_weights_say_which_and_how_to_point_at_a_folder",),
    ),
    Mutant(
        "features-model-memo-ignores-the-seed",
        "neurotorch/features/forward.py",
        "    key = json.dumps(recipe, sort_keys=True, default=str)",
        "    key = json.dumps([spec.model, str(device)])",
        (f"{SOURCES}::test_two_seeds_of_one_model_in_one_process_are_two_models",),
    ),
    Mutant(
        "features-dataloader-workers-in-a-daemon",
        "neurotorch/features/forward.py",
        "    if requested and multiprocessing.current_process().daemon:",
        "    if False:",
        (f"{RUNS}::test_a_daemonic_worker_decodes_images_itself",),
    ),
    Mutant(
        "features-paired-rows-in-sorted-order",
        PAIRING,
        "                    self.extracted[name].read_rows(self._rows)",
        "                    self.extracted[name].read_rows(np.sort(self._rows))",
        (f"{DATA}::test_map_style_items_carry_their_own_images_features_in_workers",),
    ),
    Mutant(
        "features-specs-in-hparams",
        PAIRING,
        "    return [item if isinstance(item, str) else as_spec(item).to_dict() for item in features]",
        "    return list(features)",
        (f"{DATA}::test_the_datamodule_takes_specs_as_yaml_dicts",),
    ),
    Mutant(
        "features-colliding-names-accepted",
        PAIRING,
        "    repeated = sorted({name for name in spaces if spaces.count(name) > 1})",
        "    repeated = []",
        (f"{DATA}::test_features_that_cannot_be_paired_are_refused",),
    ),
    Mutant(
        "features-dims-of-the-batch-axis",
        "neurotorch/features/forward.py",
        "        dims[name] = int(pool(x, spec.pooling, layer=spec.layer).shape[1])",
        "        dims[name] = int(pool(x, spec.pooling, layer=spec.layer).shape[0])",
        (f"{DATA}::test_the_datamodule_takes_specs_as_yaml_dicts",),
    ),
]
