"""DataRoot over a real S3 server on loopback: reads, anonymous access, errors, the local cache."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
from pathlib import Path

import pytest

from neurotorch.errors import DataNotFoundError, RemoteAccessError, UnsafePathError
from neurotorch.fmri import layout
from neurotorch.fmri.download import unit_plan_path
from neurotorch.io import remote_cache
from neurotorch.io.storage import STREAM_BLOCK_SIZE, DataRoot, resolve_storage_options

pytest_plugins = ["s3_server"]

BETAS = layout.session_betas("sub-01", "ses-01")
TRIALS = layout.session_trials("sub-01", "ses-01")


def local_files(root: Path, below: str = "") -> dict[str, int]:
    base = root / below
    return {
        p.relative_to(root).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()
    }


# --- storage options ------------------------------------------------------------------------


def test_s3_is_anonymous_only_without_credentials(no_aws_credentials, monkeypatch, tmp_path):
    fresh = {"use_listings_cache": False}  # an object replaced in the store is seen at once
    assert resolve_storage_options("s3", {}) == {"anon": True, **fresh}
    assert resolve_storage_options("s3", {"key": "k", "secret": "s"}) == {
        "key": "k",
        "secret": "s",
        **fresh,
    }
    assert resolve_storage_options("s3", {"anon": False}) == {"anon": False, **fresh}
    assert resolve_storage_options("gcs", {"token": "x"}) == {"token": "x"}
    monkeypatch.setenv("AWS_PROFILE", "lab")
    assert "anon" not in resolve_storage_options("s3", {})
    monkeypatch.delenv("AWS_PROFILE")
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = x\naws_secret_access_key = y\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    assert "anon" not in resolve_storage_options("s3", {})


def test_s3_endpoint_comes_from_environment_unless_given(no_aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert resolve_storage_options("s3")["endpoint_url"] == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    assert resolve_storage_options("s3")["endpoint_url"] == "http://127.0.0.1:2"
    given = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:3"}}
    assert "endpoint_url" not in resolve_storage_options("s3", given)


def test_the_same_url_on_two_servers_is_cached_and_planned_apart(
    no_aws_credentials, monkeypatch, tmp_path
):
    """Copies of s3://bucket/... from one server are never served for another's, however the
    endpoint is given: top level, in ``client_kwargs``, or by the environment."""
    monkeypatch.setenv("NEUROTORCH_CACHE", str(tmp_path / "cache"))
    url, rel = "s3://bucket/data", "sub-01/betas.nii.gz"
    one = DataRoot(url, {"endpoint_url": "http://127.0.0.1:1"})
    two = DataRoot(url, {"client_kwargs": {"endpoint_url": "http://127.0.0.1:2"}})
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    two_from_environment = DataRoot(url)
    assert [root.endpoint for root in (one, two, two_from_environment)] == [
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:2",
    ]
    entries = [remote_cache.cache_entry_dir(r, rel) for r in (one, two, two_from_environment)]
    assert entries[0] != entries[1] and entries[1] == entries[2]
    plans = [unit_plan_path(tmp_path / "out", r) for r in (one, two, two_from_environment)]
    assert plans[0] != plans[1] and plans[1] == plans[2]


# --- reading through s3:// ------------------------------------------------------------------


def test_remote_tree_reads_like_the_local_tree(moto_server, public_laion_bucket, tiny_laion_root):
    root = DataRoot(public_laion_bucket, moto_server.options())
    expected = local_files(tiny_laion_root)
    assert {rel: info["size"] for rel, info in root.files().items()} == expected
    assert root.listdir(layout.GLM_DIR) == sorted(
        p.name for p in (tiny_laion_root / layout.GLM_DIR).iterdir()
    )
    assert root.listdir("no/such/folder") == []
    assert root.exists(BETAS) and not root.exists(BETAS + ".missing")
    assert root.isdir(layout.GLM_DIR) and not root.isdir(BETAS)
    assert root.size(BETAS) == (tiny_laion_root / BETAS).stat().st_size
    with root.open(BETAS) as handle:
        assert handle.read() == (tiny_laion_root / BETAS).read_bytes()
    with root.open(TRIALS, mode="r") as handle:
        assert handle.read() == (tiny_laion_root / TRIALS).read_text()
    with root.open(TRIALS) as handle:
        assert list(handle) == (tiny_laion_root / TRIALS).read_bytes().splitlines(keepends=True)
    with pytest.raises(FileNotFoundError):
        root.open(BETAS + ".missing").read()
    with pytest.raises(UnsafePathError):
        root.path("../other-bucket/file")


def test_an_object_replaced_in_the_store_is_read_anew_in_the_same_process(
    moto_server, tiny_laion_root, tmp_path, monkeypatch
):
    """s3fs answered info() and open() from a listing kept for the life of the process: a mask
    replaced after a dataset was made was served stale, a replaced betas file failed to read."""
    monkeypatch.setenv("NEUROTORCH_CACHE", str(tmp_path / "cache"))
    url = moto_server.upload_tree(tiny_laion_root, "replaced", include=lambda p: p == TRIALS)
    root = DataRoot(url, moto_server.options())
    assert TRIALS in root.files()  # a listing, as describe and the datasets make
    first = root.local_path(TRIALS).read_bytes()
    store = moto_server.filesystem()
    store.pipe(f"replaced/{TRIALS}", first + b"one more line\n")
    again = DataRoot(url, moto_server.options())
    assert again.local_path(TRIALS).read_bytes() == first + b"one more line\n"
    with again.open(TRIALS) as handle:
        assert handle.read() == first + b"one more line\n"
    assert root.info(TRIALS)["version"] == again.info(TRIALS)["version"]


def test_streaming_open_reads_ahead_in_large_ranged_requests(
    moto_server, public_laion_bucket, tiny_laion_root
):
    root = DataRoot(public_laion_bucket, moto_server.options())
    size = root.size(BETAS)
    assert size < STREAM_BLOCK_SIZE
    with root.open(BETAS) as handle, gzip.GzipFile(fileobj=handle) as stream:
        decompressed = b"".join(iter(lambda: stream.read(64 * 1024), b""))
        # 64 kB reads of the gzip stream were served by a single ranged GET of the object.
        assert handle._raw.cache.miss_count == 1
    assert decompressed == gzip.decompress((tiny_laion_root / BETAS).read_bytes())


def _read_in_child(payload: bytes) -> bytes:
    root = pickle.loads(payload)
    with root.open(TRIALS) as handle:
        return handle.read()


@pytest.mark.slow
def test_pickled_root_reads_in_a_spawned_process(moto_server, public_laion_bucket, tiny_laion_root):
    root = DataRoot(public_laion_bucket, moto_server.options())
    root.exists(TRIALS)  # the parent's filesystem exists and must not travel
    payload = pickle.dumps(root)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        data = pool.apply(_read_in_child, (payload,))
    assert data == (tiny_laion_root / TRIALS).read_bytes()


# --- anonymous access and errors ------------------------------------------------------------


def test_anonymous_read_of_a_public_bucket(
    no_aws_credentials, monkeypatch, moto_server, public_laion_bucket, tiny_laion_root
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    root = DataRoot(public_laion_bucket)
    assert root.anonymous
    with root.open(BETAS) as handle:
        assert handle.read() == (tiny_laion_root / BETAS).read_bytes()


def test_anonymous_read_of_a_private_bucket_fails_clearly(
    no_aws_credentials, monkeypatch, moto_server, tiny_laion_root
):
    url = moto_server.upload_tree(
        tiny_laion_root, "laion-private", include=lambda rel: rel == TRIALS
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    anonymous = DataRoot(url)
    with pytest.raises(RemoteAccessError) as caught:
        anonymous.open(TRIALS).read()
    message = str(caught.value)
    assert f"{url}/{TRIALS}" in message
    assert "anonymous" in message and "private" in message and "AWS_ACCESS_KEY_ID" in message
    signed = DataRoot(url, {"key": "testing", "secret": "testing"})
    with signed.open(TRIALS) as handle:
        assert handle.read() == (tiny_laion_root / TRIALS).read_bytes()


def test_missing_bucket_is_a_clear_error(moto_server):
    root = DataRoot("s3://no-such-bucket/data", moto_server.options())
    with pytest.raises(
        RemoteAccessError, match="bucket of s3://no-such-bucket/data does not exist"
    ):
        root.listdir()


def test_unreachable_server_is_a_clear_error(unreachable_endpoint):
    endpoint = unreachable_endpoint
    fail_fast = {"config_kwargs": {"retries": {"max_attempts": 1}}}
    root = DataRoot("s3://bucket/data", {"endpoint_url": endpoint, "anon": True, **fail_fast})
    with pytest.raises(RemoteAccessError, match="Could not reach the storage server") as caught:
        root.open(TRIALS)
    assert endpoint in str(caught.value) and "s3://bucket/data" in str(caught.value)


# --- local cache ----------------------------------------------------------------------------


def test_local_path_is_a_cached_copy_refreshed_when_the_object_changes(
    isolated_cache, moto_server, tmp_path
):
    source = tmp_path / "src"
    (source / "stimuli").mkdir(parents=True)
    (source / "stimuli" / "table.csv").write_bytes(b"a,b\n1,2\n")
    url = moto_server.upload_tree(source, "cache-test")
    root = DataRoot(url, moto_server.options())
    first = root.local_path("stimuli/table.csv")
    assert first.is_relative_to(isolated_cache / "remote")
    assert first.read_bytes() == b"a,b\n1,2\n"
    stamp = first.stat().st_mtime_ns
    assert root.local_path("stimuli/table.csv") == first and first.stat().st_mtime_ns == stamp

    (source / "stimuli" / "table.csv").write_bytes(b"a,b\n3,4\n5,6\n")
    moto_server.upload_tree(source, "cache-test")
    root.fs.invalidate_cache()
    second = root.local_path("stimuli/table.csv")
    assert second != first and second.read_bytes() == b"a,b\n3,4\n5,6\n"
    assert not first.exists()  # the outdated version was removed


def test_cached_copy_is_used_when_the_store_is_unreachable(
    isolated_cache, moto_server, public_laion_bucket, monkeypatch
):
    root = DataRoot(public_laion_bucket, moto_server.options())
    cached = root.local_path(TRIALS)

    def unreachable(*parts):
        raise RemoteAccessError("Could not reach the storage server.")

    monkeypatch.setattr(root, "info", unreachable)
    with pytest.warns(UserWarning, match="cached copy"):
        assert root.local_path(TRIALS) == cached
    with pytest.raises(RemoteAccessError):
        remote_cache.cached_local_copy(root, "stimuli/never-cached.h5")


def _cache_in_child(payload: bytes, relpath: str, queue) -> None:
    root = pickle.loads(payload)
    path = root.local_path(relpath)
    queue.put((str(path), path.stat().st_ino, path.read_bytes()))


@pytest.mark.slow
def test_concurrent_processes_share_one_cached_copy(
    isolated_cache, moto_server, public_laion_bucket, tiny_laion_root
):
    root = DataRoot(public_laion_bucket, moto_server.options())
    relpath = layout.embeddings("CLIP")
    root.exists(relpath)  # the parent has a live filesystem before the fork, as with a DataLoader
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_cache_in_child, args=(pickle.dumps(root), relpath, queue))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len({(path, inode) for path, inode, _ in results}) == 1  # one download, never replaced
    expected = (tiny_laion_root / relpath).read_bytes()
    assert all(data == expected for _, _, data in results)
    leftovers = [p for p in Path(results[0][0]).parent.iterdir() if p.name.endswith(".part")]
    assert leftovers == []
    assert os.path.getsize(results[0][0]) == len(expected)


def test_a_folder_that_cannot_be_read_stops_the_listing(tmp_path, monkeypatch):
    """``os.walk`` skips a folder it cannot list unless told otherwise: ``verify`` and
    ``describe`` then reported a dataset with a subject missing as complete."""
    for folder in ("open", "closed"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "betas.nii.gz").write_bytes(b"x")
    root = DataRoot(tmp_path)
    assert sorted(root.files()) == ["closed/betas.nii.gz", "open/betas.nii.gz"]
    walk = os.walk

    def walk_without_permission(top, onerror=None, **kwargs):  # what a chmod 700 folder does
        for folder, dirs, names in walk(top, onerror=onerror, **kwargs):
            if folder.endswith("closed"):
                onerror(PermissionError(13, "Permission denied", folder))
                continue
            yield folder, dirs, names

    monkeypatch.setattr(os, "walk", walk_without_permission)
    with pytest.raises(DataNotFoundError, match=r"Cannot list .*closed \(Permission denied\)"):
        root.files()
    assert root.files("absent") == {}  # a folder that does not exist is still empty
