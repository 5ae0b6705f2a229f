"""Remote files that change while neurotorch reads them: a copy never mixes two versions, an HTTP
server's ``Last-Modified`` versions its files, a job array never skips a file when the source
changes between tasks, and two processes sharing the remote cache leave each other's transfers
alone. Every expectation is bytes written independently (s3fs, a plain file) or a listing."""

from __future__ import annotations

import functools
import http.server
import itertools
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import pytest

from neurotorch.errors import ParameterError, RemoteAccessError
from neurotorch.fmri import layout
from neurotorch.fmri.download import download_laion_fmri, download_units
from neurotorch.io import remote_cache
from neurotorch.io.locks import path_lock
from neurotorch.io.storage import DataRoot, UnversionedRemoteWarning
from neurotorch.verify import verify_path

pytest_plugins = ["s3_server"]

CHUNK = 16 * 1024
SIZE = 16 * CHUNK  # sixteen reads of one chunk each
VERSION_A = bytes(range(256)) * (SIZE // 256)
VERSION_B = bytes(reversed(range(256))) * (SIZE // 256)


@pytest.fixture
def small_reads(monkeypatch):
    """Copies read one chunk per request, so a replacement falls between two reads."""
    monkeypatch.setattr(remote_cache, "TRANSFER_CHUNK_SIZE", CHUNK)
    monkeypatch.setattr(remote_cache, "TRANSFER_BLOCK_SIZE", CHUNK)


def replace_after(chunks: dict[int, object]):
    """An ``on_bytes`` that runs ``chunks[k]()`` once the k-th chunk was written."""
    seen = []

    def on_bytes(n: int) -> None:
        seen.append(n)
        if len(seen) in chunks:
            chunks[len(seen)]()

    return on_bytes


def cache_files(cache: Path, name: str) -> list[Path]:
    return [p for p in (cache / "remote").rglob(f"{name}*") if p.is_file()]


# --- 1. an object replaced during its copy ----------------------------------------------------


def test_an_object_replaced_while_it_is_cached_is_never_kept_mixed(
    isolated_cache, moto_server, small_reads, monkeypatch
):
    fs = moto_server.filesystem()
    fs.mkdir("changes-cache")
    fs.pipe("changes-cache/emb.h5", VERSION_A)
    root = DataRoot("s3://changes-cache", moto_server.options())
    fetch = remote_cache.fetch_file
    replace = replace_after({1: lambda: fs.pipe("changes-cache/emb.h5", VERSION_B)})
    monkeypatch.setattr(
        remote_cache, "fetch_file", lambda *a, **k: fetch(*a, **k, on_bytes=replace)
    )
    with pytest.raises(RemoteAccessError, match="run again"):
        root.local_path("emb.h5")
    assert [p for p in cache_files(isolated_cache, "emb.h5") if p.name == "emb.h5"] == []
    monkeypatch.setattr(remote_cache, "fetch_file", fetch)
    assert root.local_path("emb.h5").read_bytes() == VERSION_B


def test_an_object_replaced_and_restored_during_its_copy_is_refused(
    isolated_cache, moto_server, small_reads, tmp_path
):
    """A, then B, then A again: the version after the copy would be A's with some chunks of B in
    the middle; S3's If-Match on every read refuses the first read of B (A is never restored)."""
    fs = moto_server.filesystem()
    fs.mkdir("changes-aba")
    fs.pipe("changes-aba/emb.h5", VERSION_A)
    root = DataRoot("s3://changes-aba", moto_server.options())
    replace = replace_after(
        {
            1: lambda: fs.pipe("changes-aba/emb.h5", VERSION_B),
            4: lambda: fs.pipe("changes-aba/emb.h5", VERSION_A),
        }
    )
    destination = tmp_path / "copy" / "emb.h5"
    with pytest.raises(RemoteAccessError, match="run again"):
        remote_cache.fetch_file(root, "emb.h5", destination, on_bytes=replace)
    assert not destination.exists()
    assert remote_cache.fetch_file(root, "emb.h5", destination) > 0
    assert destination.read_bytes() == fs.cat("changes-aba/emb.h5")


def test_a_local_file_rewritten_during_its_copy_is_refused(isolated_cache, small_reads, tmp_path):
    """No If-Match for local files (nor HTTP): the version looked up after the reads tells."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "emb.h5").write_bytes(VERSION_A)

    def rewrite_in_place() -> None:
        with open(source / "emb.h5", "r+b") as handle:
            handle.write(VERSION_B)

    destination = tmp_path / "copy" / "emb.h5"
    with pytest.raises(RemoteAccessError, match="replaced in the store while it was read"):
        remote_cache.fetch_file(
            DataRoot(source), "emb.h5", destination, on_bytes=replace_after({1: rewrite_in_place})
        )
    assert not destination.exists() and list(destination.parent.iterdir()) == []
    remote_cache.fetch_file(DataRoot(source), "emb.h5", destination)
    assert destination.read_bytes() == VERSION_B


def in_one_session(rel: str) -> bool:
    return rel.startswith(layout.session_func_dir("sub-01", "ses-01")) or (
        rel.startswith(layout.subject_dir("sub-01")) and rel.count("/") == 3
    )


def test_a_download_never_keeps_a_file_replaced_during_its_transfer(
    isolated_cache, moto_server, tiny_laion_root, small_reads, tmp_path
):
    url = moto_server.upload_tree(tiny_laion_root, "changes-download", include=in_one_session)
    fs = moto_server.filesystem()
    fs.pipe("changes-download/a-embeddings.bin", VERSION_A)  # first in path order
    kwargs = dict(source=url, storage_options=moto_server.options(), sessions="ses-01")
    out = tmp_path / "out"
    replace = replace_after({1: lambda: fs.pipe("changes-download/a-embeddings.bin", VERSION_B)})
    with pytest.raises(RemoteAccessError, match="a-embeddings.bin") as caught:
        download_laion_fmri(out, subjects="sub-01", workers=1, on_bytes=replace, **kwargs)
    assert "run the same download again" in str(caught.value)
    assert not (out / "a-embeddings.bin").exists()
    result = download_laion_fmri(out, subjects="sub-01", **kwargs)
    assert "a-embeddings.bin" in result.transferred
    assert (out / "a-embeddings.bin").read_bytes() == VERSION_B


# --- 2. HTTP roots: Last-Modified, or no version at all ---------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class NoDatesHandler(QuietHandler):
    """A server that sends neither an ETag nor a Last-Modified header."""

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "last-modified":
            super().send_header(keyword, value)


def serve(folder: Path, handler: type) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_http_file_replaced_by_one_of_the_same_size_is_fetched_again(isolated_cache, tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    mask = folder / "mask.bin"
    mask.write_bytes(b"A" * 1000)
    os.utime(mask, (time.time() - 100, time.time() - 100))
    server = serve(folder, QuietHandler)
    try:
        root = DataRoot(f"http://127.0.0.1:{server.server_address[1]}")
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnversionedRemoteWarning)  # Last-Modified is a version
            assert root.local_path("mask.bin").read_bytes() == b"A" * 1000
            mask.write_bytes(b"B" * 1000)  # same size, modified now
            assert root.local_path("mask.bin").read_bytes() == b"B" * 1000
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_file_without_any_version_is_keyed_on_its_size_with_a_warning(
    isolated_cache, tmp_path
):
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "mask.bin").write_bytes(b"A" * 1000)
    server = serve(folder, NoDatesHandler)
    try:
        root = DataRoot(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.warns(UnversionedRemoteWarning, match="neither an ETag nor a modification"):
            assert root.info("mask.bin") == {"size": 1000, "version": "1000-"}
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnversionedRemoteWarning)  # once per server
            assert root.local_path("mask.bin").read_bytes() == b"A" * 1000
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_root_is_listed_verified_and_downloaded(isolated_cache, source_tree, tmp_path):
    """An HTTP index page lists names without sizes: each file's size and version come from the
    file itself (they crashed `files`, so ``verify``, ``describe`` and ``download``)."""
    local = {
        p.relative_to(source_tree).as_posix(): p.stat().st_size
        for p in source_tree.rglob("*")
        if p.is_file()
    }
    server = serve(source_tree, QuietHandler)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnversionedRemoteWarning)  # Last-Modified versions
            listing = DataRoot(url).files()
        assert {rel: info["size"] for rel, info in listing.items()} == local
        checks = {(c.path, c.kind, c.status) for c in verify_path(url, progress=False)}
        assert checks == {(c.path, c.kind, c.status) for c in verify_path(source_tree)}
        assert any(status == "verified" for _, _, status in checks)
        out = tmp_path / "out"
        kwargs = dict(subjects="sub-01", sessions="ses-01")
        units = [unit.relpath for unit in download_units(out, source=source_tree, **kwargs)]
        assert [unit.relpath for unit in download_units(out, source=url, **kwargs)] == units
        download_laion_fmri(out, source=url, **kwargs)
        assert all((out / rel).read_bytes() == (source_tree / rel).read_bytes() for rel in units)
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_root_asks_the_sizes_of_its_files_several_at_a_time(
    isolated_cache, source_tree, tmp_path
):
    """An index page has no sizes: one HEAD a file. Sent one at a time they cost a round trip
    each (minutes for a dataset's thousands of files); the server here answers the first two
    only once both have arrived, so a client that waits for each answer breaks the barrier."""
    barrier, arrived, broken = threading.Barrier(2, timeout=10), itertools.count(), []

    class BothFirstHeadsAtOnce(QuietHandler):
        def do_HEAD(self) -> None:
            if next(arrived) < 2:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    broken.append(self.path)
            super().do_HEAD()

    server = serve(source_tree, BothFirstHeadsAtOnce)
    try:
        listing = DataRoot(f"http://127.0.0.1:{server.server_address[1]}").files()
    finally:
        server.shutdown()
        server.server_close()
    assert not broken, f"the first HEAD requests came one at a time: {broken}"
    local = {
        p.relative_to(source_tree).as_posix(): p.stat().st_size
        for p in source_tree.rglob("*")
        if p.is_file()
    }
    assert len(local) > 2 and {rel: info["size"] for rel, info in listing.items()} == local


# --- 3. a job array over a source that changes between its tasks ------------------------------


@pytest.fixture
def source_tree(tiny_laion_root, tmp_path) -> Path:
    source = tmp_path / "source"
    for path in sorted(tiny_laion_root.rglob("*")):
        rel = path.relative_to(tiny_laion_root).as_posix()
        if path.is_file() and (in_one_session(rel) or rel.count("/") == 0):
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, source / rel)
    return source


def test_a_job_array_refuses_a_task_after_the_source_changed(isolated_cache, source_tree, tmp_path):
    out = tmp_path / "out"
    kwargs = dict(subjects="sub-01", sessions="ses-01", source=source_tree)
    listed = [unit.relpath for unit in download_units(out, **kwargs)]  # --list-units
    assert download_laion_fmri(out, only=[0], **kwargs).files == [listed[0]]
    (source_tree / "CHANGES").write_text("v1.1\n")  # sorts first: every position shifts
    with pytest.raises(ParameterError, match=r"1 added \(CHANGES\).*--list-units"):
        download_laion_fmri(out, only=[1], **kwargs)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        listed[0]
    ]
    relisted = [unit.relpath for unit in download_units(out, **kwargs)]  # listed again
    assert relisted == sorted([*listed, "CHANGES"])
    for task in range(len(relisted)):
        download_laion_fmri(out, only=[task], **kwargs)
    assert all((out / rel).read_bytes() == (source_tree / rel).read_bytes() for rel in relisted)


def test_the_first_task_records_the_units_when_none_were_listed(
    isolated_cache, source_tree, tmp_path
):
    out = tmp_path / "out"
    kwargs = dict(subjects="sub-01", sessions="ses-01", source=source_tree)
    first = download_laion_fmri(out, only=[0], **kwargs).files[0]
    (source_tree / first).unlink()
    with pytest.raises(ParameterError, match=rf"1 removed \({first}\)"):
        download_laion_fmri(out, only=[1], **kwargs)


# --- 4. two processes sharing the remote cache while the object changes -----------------------


def test_a_newer_version_leaves_a_transfer_in_progress_of_the_older_one(
    isolated_cache, moto_server
):
    fs = moto_server.filesystem()
    fs.mkdir("changes-shared")
    fs.pipe("changes-shared/emb.h5", VERSION_A)
    root = DataRoot("s3://changes-shared", moto_server.options())
    version_a = root.info("emb.h5")["version"]
    target = remote_cache.cache_entry_dir(root, "emb.h5") / version_a / "emb.h5"
    partial = remote_cache.partial_path(target, version_a)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(VERSION_A[:CHUNK])  # another process is copying version A ...
    with path_lock(target):  # ... and holds its lock
        fs.pipe("changes-shared/emb.h5", VERSION_B)
        assert root.local_path("emb.h5").read_bytes() == VERSION_B
        assert partial.read_bytes() == VERSION_A[:CHUNK]
    assert root.local_path("emb.h5").read_bytes() == VERSION_B
    assert not partial.parent.exists()  # removed once no transfer holds it


def test_a_partial_copy_removed_by_another_process_is_a_remote_access_error(
    isolated_cache, small_reads, tmp_path
):
    source = tmp_path / "source"
    source.mkdir()
    (source / "emb.h5").write_bytes(VERSION_A)
    destination = tmp_path / "copy" / "emb.h5"
    partial = remote_cache.partial_path(destination, DataRoot(source).info("emb.h5")["version"])
    with pytest.raises(RemoteAccessError, match="removed while it was written.*Run again"):
        remote_cache.fetch_file(
            DataRoot(source), "emb.h5", destination, on_bytes=replace_after({2: partial.unlink})
        )
    remote_cache.fetch_file(DataRoot(source), "emb.h5", destination)
    assert destination.read_bytes() == VERSION_A
