"""Discovery and download against a real S3 server on loopback, checked against the local tree."""

from __future__ import annotations

import filecmp
import io
import re
from pathlib import Path

import pytest

from neurotorch.cli import main
from neurotorch.errors import LicenseNotAcceptedError, RemoteAccessError, SubjectNotFoundError
from neurotorch.fmri import discovery, layout
from neurotorch.fmri.download import STIMULUS_LICENSE_NOTICE, download_laion_fmri
from neurotorch.io import remote_cache

pytest_plugins = ["s3_server"]


def tree(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()
    }


def same_bytes(a: Path, b: Path, relpaths) -> bool:
    return all(filecmp.cmp(a / rel, b / rel, shallow=False) for rel in relpaths)


def expected_subset(local: Path, subject: str, session: str) -> set[str]:
    """Files a download of one subject and session must bring, listed by hand from the tree."""
    patterns = [
        f"derivatives/glmsingle-tedana/{subject}/*.nii.gz",
        f"derivatives/glmsingle-tedana/{subject}/{session}/func/*",
        f"derivatives/rois/{subject}/*/*",
        f"derivatives/anatomical/{subject}/ses-PrismaAnat/anat/*_res-1pt8_desc-brain_mask.nii.gz",
        "splits/shared/*.json",
        f"splits/{subject}/*.json",
    ]
    return {p.relative_to(local).as_posix() for pattern in patterns for p in local.glob(pattern)}


SMALL_LICENSE = "Stimulus licence of this mirror: research use only.\n"


def in_small_tree(rel: str) -> bool:
    """One subject and session, its brain mask and the stimuli: a quick tree to download."""
    return rel.startswith(
        (
            layout.session_func_dir("sub-01", "ses-01"),
            layout.anatomical_brain_mask("sub-01"),
            layout.STIMULI_DIR,
        )
    ) or (rel.startswith(layout.subject_dir("sub-01")) and rel.count("/") == 3)


@pytest.fixture(scope="module")
def small_tree(tiny_laion_root, tmp_path_factory) -> Path:
    local = tmp_path_factory.mktemp("small") / "tree"
    for rel in tree(tiny_laion_root):
        if in_small_tree(rel):
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            (local / rel).write_bytes((tiny_laion_root / rel).read_bytes())
    (local / "stimuli" / "LICENSE").write_text(SMALL_LICENSE)
    return local


@pytest.fixture(scope="module")
def small_bucket(moto_server, small_tree) -> str:
    return moto_server.upload_tree(small_tree, "laion-small", public=True)


# --- discovery ------------------------------------------------------------------------------


def test_discovery_through_s3_matches_the_local_tree(
    moto_server, public_laion_bucket, tiny_laion_root
):
    options = moto_server.options()
    glm = tiny_laion_root / layout.GLM_DIR
    subjects = sorted(p.name for p in glm.glob("sub-*") if p.is_dir())
    assert discovery.get_subjects(public_laion_bucket, options) == subjects
    for subject in subjects:
        sessions = sorted(
            p.parent.parent.name for p in glm.glob(f"{subject}/ses-*/func/*Betas_statmap*")
        )
        assert discovery.get_sessions(subject, public_laion_bucket, options) == sessions
        rois = {
            m.group(1)
            for p in (tiny_laion_root / layout.ROI_DIR / subject / "face").iterdir()
            if (m := re.search(r"label-([A-Za-z0-9]+)_mask", p.name))
        }
        assert discovery.get_rois(subject, "face", public_laion_bucket, options) == sorted(rois)
    with pytest.raises(SubjectNotFoundError, match="sub-99"):
        discovery.get_sessions("sub-99", public_laion_bucket, options)

    table = discovery.inspect_bucket(public_laion_bucket, options)
    files = tree(tiny_laion_root)
    assert dict(zip(table["path"], table["size"], strict=True)) == files
    assert (table["kind"] == "betas").sum() == len(
        list(glm.glob("sub-*/ses-*/func/*Betas_statmap*"))
    )

    description = discovery.describe(public_laion_bucket, options)
    assert list(description.subjects) == subjects
    assert description.total_bytes == sum(
        size for rel, size in files.items() if not rel.startswith(layout.GROUNDTRUTH_DIR)
    )
    assert description.splits["shared"] == sorted(
        p.stem for p in (tiny_laion_root / "splits" / "shared").glob("*.json")
    )
    # the same answers from the local folder
    assert discovery.describe(tiny_laion_root).subjects == description.subjects
    assert "sub-01" in str(description)


def test_default_source_is_the_public_laion_bucket(no_aws_credentials):
    root = discovery.source_root()
    assert root.url == "s3://laion-fmri"
    assert root.storage_options == {"client_kwargs": {"region_name": "us-west-2"}}
    assert root.anonymous


# --- download -------------------------------------------------------------------------------


def test_download_mirrors_the_tree_and_a_rerun_transfers_nothing(
    moto_server, public_laion_bucket, tiny_laion_root, tmp_path
):
    out = tmp_path / "mirror"
    kwargs = dict(
        source=public_laion_bucket,
        storage_options=moto_server.options(),
        include_stimuli=True,
        include_anatomical=True,
        accept_license=True,
    )
    received: list[int] = []
    first = download_laion_fmri(out, on_bytes=received.append, **kwargs)
    expected = {
        rel: size
        for rel, size in tree(tiny_laion_root).items()
        if not rel.startswith(layout.GROUNDTRUTH_DIR + "/")
    }
    assert tree(out) == expected
    assert same_bytes(out, tiny_laion_root, expected)
    assert first.bytes_transferred == sum(received) == sum(expected.values())

    stamps = {rel: (out / rel).stat().st_mtime_ns for rel in expected}
    second = download_laion_fmri(out, **kwargs)
    assert second.transferred == [] and second.bytes_transferred == 0
    assert sorted(second.files) == sorted(expected)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in expected} == stamps


def test_download_of_one_session_from_the_command_line(
    no_aws_credentials, moto_server, small_bucket, small_tree, tmp_path, capsys
):
    out = tmp_path / "sub01"
    argv = ["download", "laion-fmri", "--subject", "sub-01", "--ses", "ses-01"]
    argv += ["--source", small_bucket, "--endpoint-url", moto_server.endpoint]
    assert main([*argv, "--out", str(out)]) == 0  # anonymous: no credentials configured
    wanted = expected_subset(small_tree, "sub-01", "ses-01")
    assert set(tree(out)) == wanted
    assert same_bytes(out, small_tree, wanted)
    assert f"{len(wanted)} transferred" in capsys.readouterr().out

    assert main([*argv, "--subject", "sub-07", "--out", str(out)]) == 1
    assert "sub-07" in capsys.readouterr().err

    task = tmp_path / "task"  # one job-array task reports its own unit, not the others
    assert main([*argv, "--out", str(task), "--unit", "0"]) == 0
    assert len(tree(task)) == 1
    assert capsys.readouterr().out.startswith(f"1 files in {task}: 1 transferred")


def test_stimuli_need_the_licence_accepted(
    moto_server, small_bucket, small_tree, tmp_path, monkeypatch, capsys
):
    kwargs = dict(
        source=small_bucket,
        storage_options=moto_server.options(),
        include_stimuli=True,
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: refuse, show the text
    with pytest.raises(LicenseNotAcceptedError, match="accept_license=True") as caught:
        download_laion_fmri(tmp_path / "a", **kwargs)
    assert SMALL_LICENSE.strip() in str(caught.value)
    assert not (tmp_path / "a").exists()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(LicenseNotAcceptedError, match="not accepted"):
        download_laion_fmri(tmp_path / "b", **kwargs)
    assert not (tmp_path / "b").exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    download_laion_fmri(tmp_path / "c", **kwargs)
    assert SMALL_LICENSE.strip() in capsys.readouterr().out
    stimuli = sorted(p.name for p in (small_tree / "stimuli").iterdir())
    assert sorted(p.name for p in (tmp_path / "c" / "stimuli").iterdir()) == stimuli


def test_standard_licence_notice_when_the_source_has_none(moto_server, public_laion_bucket):
    from neurotorch.fmri.download import stimulus_license_text

    text = stimulus_license_text(public_laion_bucket, moto_server.options())
    assert text == STIMULUS_LICENSE_NOTICE


def test_server_stopped_mid_transfer_then_rerun_resumes(
    separate_moto_server, tiny_laion_root, tmp_path, monkeypatch
):
    server = separate_moto_server

    url = server.upload_tree(tiny_laion_root, "laion-outage", include=in_small_tree)
    options = server.options()
    out = tmp_path / "out"
    # small reads, so the betas file takes many ranged requests and the outage falls inside one
    monkeypatch.setattr(remote_cache, "TRANSFER_CHUNK_SIZE", 32 * 1024)
    monkeypatch.setattr(remote_cache, "TRANSFER_BLOCK_SIZE", 32 * 1024)
    received = []

    def stop_after_some_bytes(n: int) -> None:
        received.append(n)
        if sum(received) > 200_000:
            server.stop()

    with pytest.raises(RemoteAccessError) as caught:
        download_laion_fmri(
            out, source=url, storage_options=options, workers=2, on_bytes=stop_after_some_bytes
        )
    message = str(caught.value)
    assert "Could not reach the storage server" in message and server.endpoint in message
    assert "run the same download again to resume" in message

    expected = expected_subset(tiny_laion_root, "sub-01", "ses-01") & {
        rel for rel in tree(tiny_laion_root) if in_small_tree(rel)
    }
    local_sizes = tree(tiny_laion_root)
    partial = {p.name: p.stat().st_size for p in out.rglob("*.part")}
    done = {rel for rel in tree(out) if not rel.endswith(".part")}
    assert any("SingletrialBetas_statmap" in name for name in partial) and done < expected
    assert all(tree(out)[rel] == local_sizes[rel] for rel in done)  # only complete files in place

    server.start()  # same port, empty: upload the same data again (same ETags)
    server.upload_tree(tiny_laion_root, "laion-outage", include=in_small_tree)
    result = download_laion_fmri(out, source=url, storage_options=options)
    assert set(tree(out)) == expected and same_bytes(out, tiny_laion_root, expected)
    remaining = sum(local_sizes[rel] for rel in expected - done) - sum(partial.values())
    assert result.bytes_transferred == remaining  # partial files were continued, not restarted


def test_interrupted_download_resumes_from_partial_files(tiny_laion_root, tmp_path, monkeypatch):
    """Ctrl-C in the middle of a transfer (here from a local source), then the same call again."""
    monkeypatch.setattr(remote_cache, "TRANSFER_CHUNK_SIZE", 16 * 1024)
    received = []

    def interrupt(n: int) -> None:
        received.append(n)
        if sum(received) > 300_000:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    selection = dict(subjects=["sub-01"], sessions=["ses-01"], source=tiny_laion_root, workers=2)
    with pytest.raises(KeyboardInterrupt):
        download_laion_fmri(out, on_bytes=interrupt, **selection)
    partial = sum(p.stat().st_size for p in out.rglob("*.part"))
    complete = {rel: size for rel, size in tree(out).items() if not rel.endswith(".part")}
    assert partial > 0

    result = download_laion_fmri(out, **selection)
    expected = expected_subset(tiny_laion_root, "sub-01", "ses-01")
    assert set(tree(out)) == expected and same_bytes(out, tiny_laion_root, expected)
    total = sum((tiny_laion_root / rel).stat().st_size for rel in expected)
    assert result.bytes_transferred == total - sum(complete.values()) - partial
