"""Mutants of the guards against remote files that change while they are read: a copy of two
versions, an HTTP server's Last-Modified ignored, a job array whose positions shift, and a
cache cleanup that deletes another process's transfer."""

from mutants import Mutant

CHANGES = "tests/test_remote_changes.py"

MUTANTS = [
    Mutant(
        "s3-copy-reads-without-if-match",
        "neurotorch/io/storage.py",
        '            kwargs.pop("size", None)',
        "            pass",
        (f"{CHANGES}::test_an_object_replaced_and_restored_during_its_copy_is_refused",),
    ),
    Mutant(
        "copy-published-without-rechecking-its-version",
        "neurotorch/io/remote_cache.py",
        "            if found != version:  # the copy may mix both versions: never published",
        "            if False:",
        (f"{CHANGES}::test_a_local_file_rewritten_during_its_copy_is_refused",),
    ),
    Mutant(
        "http-last-modified-ignored",
        "neurotorch/io/storage.py",
        '_MODIFIED_KEYS = ("LastModified", "Last-Modified", ',
        '_MODIFIED_KEYS = ("LastModified", ',
        (f"{CHANGES}::test_an_http_file_replaced_by_one_of_the_same_size_is_fetched_again",),
    ),
    Mutant(
        "http-file-without-version-not-warned",
        "neurotorch/io/storage.py",
        "            _warn_unversioned(target)",
        "            pass",
        (f"{CHANGES}::test_an_http_file_without_any_version_is_keyed_on_its_size_with_a_warning",),
    ),
    Mutant(
        "download-array-ignores-a-changed-listing",
        "neurotorch/fmri/download.py",
        '    if saved["files"] == files:',
        "    if True:",
        (
            f"{CHANGES}::test_a_job_array_refuses_a_task_after_the_source_changed",
            f"{CHANGES}::test_the_first_task_records_the_units_when_none_were_listed",
        ),
    ),
    Mutant(
        "cache-cleanup-deletes-a-transfer-in-progress",
        "neurotorch/io/remote_cache.py",
        "            _remove_outdated(other / name)",
        "            _remove_tree(other)",
        (f"{CHANGES}::test_a_newer_version_leaves_a_transfer_in_progress_of_the_older_one",),
    ),
    Mutant(
        "vanished-partial-copy-stays-file-not-found",
        "neurotorch/io/remote_cache.py",
        "            if exc.filename is None or Path(exc.filename) != partial:",
        "            if True:",
        (f"{CHANGES}::test_a_partial_copy_removed_by_another_process_is_a_remote_access_error",),
    ),
    Mutant(
        "http-sizes-asked-one-at-a-time",
        "neurotorch/io/storage.py",
        "_LOOKUPS_AT_ONCE = 16",
        "_LOOKUPS_AT_ONCE = 1",
        (f"{CHANGES}::test_an_http_root_asks_the_sizes_of_its_files_several_at_a_time",),
    ),
    Mutant(
        "endpoint-in-client-kwargs-ignored",
        "neurotorch/io/storage.py",
        '        return "" if self.is_local else str(_endpoint_of(self.resolved_options) or "")',
        '        return "" if self.is_local else str(self.resolved_options.get("endpoint_url") or "")',
        (
            "tests/test_remote_storage.py"
            "::test_the_same_url_on_two_servers_is_cached_and_planned_apart",
        ),
    ),
]
