"""Every ```python block of README.md and docs/*.md runs, in order, per page, as a user would.

The blocks of one page share one namespace (a later block may use what an earlier one made) and
run in an empty folder, on the built-in synthetic data. Pages about remote data run against a
real S3-compatible server on loopback holding the tiny synthetic tree under the bucket names the
page uses. A block that raises fails the page, naming the block and its first line.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Buckets of the remote pages, filled with the tiny synthetic LAION-fMRI tree: the public
# bucket (read anonymously) and a lab's private one (read with a named AWS profile).
PUBLIC_BUCKET, LAB_BUCKET = "laion-fmri", "my-lab-bucket"


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line number, source)`` of each ```python block of ``page``."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def pages_with_blocks() -> list[Path]:
    return [page for page in PAGES if python_blocks(page)]


@pytest.fixture
def remote_tree(tiny_laion_root, tmp_path, monkeypatch) -> Iterator[None]:
    """A loopback S3 server holding the tiny tree in the buckets the remote page names, no
    default credentials, and a ``lab`` profile for the private bucket."""
    from s3_server import MotoServer

    server = MotoServer().start()
    try:
        server.upload_tree(tiny_laion_root, PUBLIC_BUCKET, public=True)
        server.upload_tree(tiny_laion_root, LAB_BUCKET, prefix="laion-fmri")
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            monkeypatch.delenv(name)
        config = tmp_path / "aws-config"
        config.write_text(
            "[profile lab]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
        )
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
        yield
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_blocks(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_python_blocks_of_a_page_run_in_order(page: Path, tmp_path, monkeypatch, request):
    if page.name == "remote.md":
        request.getfixturevalue("remote_tree")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # "~/data/..." in a snippet stays here
    namespace: dict = {"__name__": "__docs__"}
    for line, source in python_blocks(page):
        name = f"{page.relative_to(REPO)}:{line}"
        try:
            exec(compile(source, name, "exec"), namespace)  # noqa: S102 - the documented code
        except Exception as exc:  # noqa: BLE001 - any failure of a documented block is the finding
            first = source.strip().splitlines()[0]
            raise AssertionError(f"{name} ({first!r}) raised {type(exc).__name__}: {exc}") from exc
    shutil.rmtree(workdir, ignore_errors=True)
