"""A real S3-compatible server on loopback for the remote-storage tests.

`MotoServer` runs ``moto_server`` in a subprocess on 127.0.0.1 so a test can stop it (every
connection drops, as when a network fails) and start it again on the same port. Moto keeps its
buckets in memory, so a restarted server is empty until the test uploads again.

Test modules load the fixtures with ``pytest_plugins = ["s3_server"]``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

DUMMY_CREDENTIALS = {"key": "testing", "secret": "testing"}
RETRY_FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 5}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """``moto_server`` in a subprocess on ``127.0.0.1:port``."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None
        self._fs = None

    def start(self, timeout: float = 20.0) -> MotoServer:
        executable = shutil.which("moto_server")
        command = [executable] if executable else [sys.executable, "-m", "moto.server"]
        self._process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        pytest.skip(f"moto_server did not start on {self.endpoint}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        self._fs = None

    def options(self, **extra: object) -> dict:
        """s3fs storage options with dummy credentials for this server."""
        return {"endpoint_url": self.endpoint, **DUMMY_CREDENTIALS, **RETRY_FAST, **extra}

    def filesystem(self):
        """A private signed s3fs client of this server (one per server run)."""
        if self._fs is None:
            import s3fs

            self._fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options())
        return self._fs

    def create_bucket(self, bucket: str, public: bool = False) -> None:
        """Create ``bucket`` if new; ``public`` adds a policy that lets anyone list and read it."""
        fs = self.filesystem()
        fs.makedirs(bucket, exist_ok=True)
        if public:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": ["s3:GetObject", "s3:ListBucket"],
                        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                    }
                ],
            }
            fs.call_s3("put_bucket_policy", Bucket=bucket, Policy=json.dumps(policy))

    def upload_tree(
        self,
        local: Path,
        bucket: str,
        prefix: str = "",
        public: bool = False,
        include: Callable[[str], bool] | None = None,
    ) -> str:
        """Create ``bucket`` and copy the files below ``local`` into it; return the URL.

        ``public`` makes the bucket listable and every object readable by anyone (bucket policy
        plus a ``public-read`` object ACL, as on a public AWS bucket); ``include`` selects files
        by their path relative to ``local``.
        """
        self.create_bucket(bucket, public=public)
        base = f"{bucket}/{prefix}".rstrip("/")
        files = [
            path
            for path in sorted(Path(local).rglob("*"))
            if path.is_file() and (include is None or include(path.relative_to(local).as_posix()))
        ]
        extra = {"ACL": "public-read"} if public else {}
        self.filesystem().put(
            [str(path) for path in files],
            [f"{base}/{path.relative_to(local).as_posix()}" for path in files],
            **extra,
        )
        return f"s3://{base}"


@pytest.fixture(scope="session")
def moto_server():
    """One loopback S3 server for the session (tests use distinct bucket names)."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def public_laion_bucket(moto_server, tiny_laion_root) -> str:
    """The tiny synthetic LAION-fMRI tree in a public bucket: ``s3://laion-public/data``."""
    return moto_server.upload_tree(tiny_laion_root, "laion-public", prefix="data", public=True)


@pytest.fixture
def separate_moto_server():
    """A server of the test's own (it may stop and restart it); stopped at teardown."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def unreachable_endpoint() -> str:
    """An endpoint URL on loopback where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """An environment with no AWS credentials and no endpoint variables."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def isolated_cache(monkeypatch, tmp_path):
    """``NEUROTORCH_CACHE`` in a fresh temporary folder; returns it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEUROTORCH_CACHE", str(cache))
    return cache
