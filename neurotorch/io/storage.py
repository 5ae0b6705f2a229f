"""Dataset roots on local disk or any fsspec URL (``s3://``, ``gs://``, ``https://``, ...).

A `DataRoot` joins relative paths safely (no escaping the root), opens files, lists folders and
hands out a local path for libraries that need one (h5py, nibabel). It holds only the URL and the
storage options, so it pickles for ``spawn`` workers; the fsspec filesystem is created lazily in
each process.

S3 specifics (`resolve_storage_options`): when no AWS credentials are configured, requests are
anonymous, so public buckets such as ``s3://laion-fmri`` work with no setup; the endpoint comes
from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` unless ``storage_options`` name one. Remote
failures (access denied, missing bucket, unreachable server) raise `RemoteAccessError` naming the
URL and what to do, also when they happen in the middle of a read.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import importlib
import io
import os
import posixpath
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, cast

import fsspec

from neurotorch.errors import (
    DataNotFoundError,
    NeurotorchError,
    RemoteAccessError,
    UnsafePathError,
)

# A streaming pass reads a remote file front to back in requests of this size (readahead cache),
# so a multi-GB ``.nii.gz`` is fetched in a few hundred ranged GETs and never lands on disk.
STREAM_BLOCK_SIZE = 32 * 2**20
STREAM_CACHE_TYPE = "readahead"

ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CREDENTIAL_ENV_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
# storage_options keys by which a caller chooses credentials (or anonymity) for s3fs explicitly.
_EXPLICIT_CREDENTIAL_KEYS = (
    "anon",
    "key",
    "secret",
    "token",
    "username",
    "password",
    "profile",
    "session",
)
# Settings in ~/.aws/config that provide credentials without ~/.aws/credentials.
_CONFIG_CREDENTIAL_MARKERS = (
    "aws_access_key_id",
    "credential_process",
    "sso_",
    "role_arn",
    "web_identity",
)


def _classes(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes of an optional package (none when it is not installed)."""
    try:
        found = importlib.import_module(module)
    except ImportError:
        return ()
    return tuple(getattr(found, name) for name in names if hasattr(found, name))


@functools.cache
def _connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the server could not be reached or dropped the connection"."""
    return (
        ConnectionError,
        TimeoutError,
        *_classes(
            "botocore.exceptions",
            "EndpointConnectionError",
            "ConnectionClosedError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "HTTPClientError",
        ),
        *_classes("aiohttp", "ClientConnectionError", "ClientPayloadError"),
        *_classes("fsspec.exceptions", "FSTimeoutError"),
    )


@functools.cache
def _credential_errors() -> tuple[type[BaseException], ...]:
    return _classes("botocore.exceptions", "NoCredentialsError", "PartialCredentialsError")


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` paths other than ``file://``."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def check_relative(relpath: str) -> str:
    """Normalise a relative path inside a root; raise `UnsafePathError` if it would escape it."""
    norm = posixpath.normpath(relpath.replace("\\", "/"))
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or "\x00" in norm:
        raise UnsafePathError(
            f"Path {relpath!r} leaves the dataset root; give a path inside the root "
            "(no leading '/', no '..' components)."
        )
    return "" if norm == "." else norm


def _profile_settings(path: Path, section: str) -> str:
    """The settings of one section of an AWS ini file, lower-cased ('' if absent or unreadable)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return ""
    if not parser.has_section(section):
        return ""
    return " ".join(f"{key}={value}" for key, value in parser.items(section)).lower()


def aws_credentials_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether AWS credentials are configured for the requests neurotorch signs.

    Looks at the standard variables (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, web-identity and
    container credentials), then at the ``default`` profile (the one used when no variable names
    another): its keys in ``~/.aws/credentials`` (or ``AWS_SHARED_CREDENTIALS_FILE``) and its
    credential settings in ``~/.aws/config`` (or ``AWS_CONFIG_FILE``). Other profiles do not
    count; they are used only when named (``AWS_PROFILE``, ``storage_options={"profile": ...}``).
    Instance-metadata credentials are not probed (that needs a network round trip); pass
    ``storage_options={"anon": False}`` to use them.
    """
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in CREDENTIAL_ENV_VARS):
        return True
    credentials = Path(
        env.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials"
    ).expanduser()
    if "aws_access_key_id" in _profile_settings(credentials, "default"):
        return True
    config = Path(env.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config").expanduser()
    settings = _profile_settings(config, "default")
    return any(marker in settings for marker in _CONFIG_CREDENTIAL_MARKERS)


def _endpoint_of(options: dict[str, Any]) -> str | None:
    return options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")


def resolve_storage_options(
    protocol: str,
    storage_options: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The options a filesystem of ``protocol`` is created with.

    For ``s3``: anonymous access (``anon=True``) unless credentials are configured (see
    `aws_credentials_configured`) or the options choose credentials themselves, the endpoint
    from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` unless the options name one, and no
    cached listings (``use_listings_cache=False`` unless given). Other protocols get
    ``storage_options`` unchanged.
    """
    options = dict(storage_options or {})
    if protocol not in ("s3", "s3a"):
        return options
    # no cached listings: an object replaced in the store is seen at the next look (s3fs keeps
    # listings for the life of the process, and answers info() and open() from them)
    options.setdefault("use_listings_cache", False)
    env = os.environ if environ is None else environ
    if not any(
        key in options for key in _EXPLICIT_CREDENTIAL_KEYS
    ) and not aws_credentials_configured(env):
        options["anon"] = True
    if not _endpoint_of(options):
        endpoint = next((env[name] for name in ENDPOINT_ENV_VARS if env.get(name)), None)
        if endpoint:
            options["endpoint_url"] = endpoint
    return options


def remote_error(exc: BaseException, url: str, options: dict[str, Any]) -> RemoteAccessError | None:
    """A `RemoteAccessError` explaining ``exc`` raised while accessing ``url``, or ``None``.

    ``None`` means the exception is not a remote-access problem (a missing object stays a
    ``FileNotFoundError``, a format error stays what it is) and should propagate unchanged.
    """
    if isinstance(exc, NeurotorchError):
        return None
    endpoint = _endpoint_of(options)
    where = f" (endpoint {endpoint})" if endpoint else ""
    is_s3 = url.startswith(("s3://", "s3a://"))
    endpoint_advice = (
        "the endpoint (AWS_ENDPOINT_URL_S3 or storage_options['endpoint_url'])"
        if is_s3
        else "the URL"
    )
    if isinstance(exc, PermissionError):
        if not is_s3:
            advice = "Check the credentials given in storage_options or configured for this store."
        elif options.get("anon"):
            advice = (
                "The request was anonymous because no AWS credentials are configured, so only "
                "public buckets can be read; this bucket or object is private. Configure "
                "credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
                "~/.aws/credentials) or pass storage_options={'key': ..., 'secret': ...}."
            )
        else:
            advice = (
                "The request was signed with the configured AWS credentials, which may not read "
                "it. Check the credentials or profile; for a public bucket pass "
                "storage_options={'anon': True}."
            )
        return RemoteAccessError(f"Access denied to {url}{where}. {advice}")
    if isinstance(exc, FileNotFoundError):
        if _is_missing_bucket(exc):
            return RemoteAccessError(
                f"The bucket of {url} does not exist{where}. Check the bucket name in the URL "
                f"and {endpoint_advice}."
            )
        return None
    if isinstance(exc, _credential_errors()):
        return RemoteAccessError(
            f"No usable AWS credentials to read {url}: {exc}. For a public bucket pass "
            "storage_options={'anon': True}; otherwise configure AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE."
        )
    if type(exc).__name__ == "FileExpired":  # s3fs: the object changed while it was read
        return RemoteAccessError(
            f"{url} changed in the store while it was being read{where}; run again to read the "
            "new version."
        )
    if isinstance(exc, _connection_errors()):
        return RemoteAccessError(
            f"Could not reach the storage server for {url}{where}: {exc}. Check the network "
            f"connection and {endpoint_advice}, then retry; downloads resume where they stopped."
        )
    return None


def _is_missing_bucket(exc: BaseException) -> bool:
    for err in (exc, exc.__cause__, exc.__context__):
        response = getattr(err, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") == "NoSuchBucket":
            return True
    return "bucket does not exist" in str(exc).lower()


def local_version(stat: os.stat_result) -> str:
    """The version of a local file: its size, modification time, inode and change time (ns).

    The change time (ctime) is set by the kernel on every write, rename or change of metadata,
    and no call sets it back: ``touch -r``, ``os.utime``, ``cp -p`` and ``rsync -t`` restore only
    the modification time. A file rewritten in place with its size and modification time restored
    therefore gets a new version, and so does one replaced by another file (a new inode).
    """
    return f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ino}-{stat.st_ctime_ns}"


def _unreadable_folder(error: OSError) -> None:
    """``os.walk``'s error handler: a folder that does not exist lists as empty; one that
    cannot be read stops the listing."""
    if not isinstance(error, FileNotFoundError):
        raise DataNotFoundError(
            f"Cannot list {error.filename} ({error.strerror}): the files below it would be left "
            "out; make it readable (its permissions) and run again."
        ) from error


def _local_info(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"size": stat.st_size, "version": local_version(stat)}


class UnversionedRemoteWarning(UserWarning):
    """A remote file reports no version (no ETag, no modification time); see `DataRoot.info`."""


#: requests in flight at once when a listing lacks sizes (an HTTP index page): one ``HEAD`` each
_LOOKUPS_AT_ONCE = 16
# Keys under which fsspec filesystems report a content tag (S3 and HTTP ``ETag``, HTTP
# ``Content-MD5`` and ``Digest``) and a modification time (S3 ``LastModified``, HTTP's header
# ``Last-Modified``, ``mtime``/``updated``/``created`` of others), in order of preference.
_TAG_KEYS = ("ETag", "etag", "md5", "Content-MD5", "Digest")
_MODIFIED_KEYS = ("LastModified", "Last-Modified", "last_modified", "mtime", "updated", "created")
# Servers already warned about reporting no version of their files (once per server and process).
_UNVERSIONED_SERVERS: set[str] = set()


def _remote_info(details: dict[str, Any]) -> dict[str, Any]:
    """``{"size", "version"}`` from an fsspec ``info``: the content tag, else size and modification
    time, else the size alone (``"<size>-"``, see `_warn_unversioned`)."""
    size = int(details["size"])
    tag = next((details[key] for key in _TAG_KEYS if details.get(key)), None)
    if tag:
        return {"size": size, "version": str(tag).strip('"')}
    modified = next((details[key] for key in _MODIFIED_KEYS if details.get(key)), "")
    return {"size": size, "version": f"{size}-{modified}"}


def _is_unversioned(details: dict[str, Any]) -> bool:
    return not any(details.get(key) for key in (*_TAG_KEYS, *_MODIFIED_KEYS))


def _warn_unversioned(url: str) -> None:
    """Warn, once per server, that its files carry no version: a same-size change goes unseen."""
    server = url.split("://", 1)[-1].split("/", 1)[0]
    if server in _UNVERSIONED_SERVERS:
        return
    _UNVERSIONED_SERVERS.add(server)
    warnings.warn(
        f"{url} is served with neither an ETag nor a modification time (Last-Modified), so "
        "neurotorch cannot tell it from a replacement of the same size: its cached copy "
        "(DataRoot.local_path) and a store prepared from it are keyed on its size alone and stay "
        "in use if the file is replaced by one of the same size. Serve the files with ETag or "
        "Last-Modified headers, or delete the cache ($NEUROTORCH_CACHE/remote) and the prepared "
        "store after changing them. (Warned once per server.)",
        UnversionedRemoteWarning,
        stacklevel=3,
    )


def _replaced_error(url: str, expected: str, found: str) -> RemoteAccessError:
    return RemoteAccessError(
        f"{url} was replaced in the store while it was read (version {found!r}, expected "
        f"{expected!r}), so a copy would mix two versions; nothing of it was kept. Run again to "
        "read the new version."
    )


class RemoteFile(io.RawIOBase):
    """A remote file opened for reading whose errors become `RemoteAccessError`.

    Wraps an fsspec file; ``read``/``readinto``/``seek``/``tell`` delegate to it, and a failure
    in the middle of a streaming pass (server gone, access revoked) names the URL.
    """

    def __init__(self, raw: Any, url: str, options: dict[str, Any]):  # raw: an fsspec file
        super().__init__()
        self._raw = raw
        self.url = url
        self._options = options

    def _translate(self, exc: Exception) -> Exception:
        return remote_error(exc, self.url, self._options) or exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._raw.read(-1 if size is None else size)
        except Exception as exc:
            raise self._translate(exc) from exc

    def readall(self) -> bytes:
        return self.read(-1)

    def readline(self, size: int | None = -1) -> bytes:
        if size not in (None, -1):
            return super().readline(size)
        try:
            return self._raw.readline()
        except Exception as exc:
            raise self._translate(exc) from exc

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    @property
    def size(self) -> int:
        """Size of the remote object in bytes."""
        return int(self._raw.size)

    @property
    def name(self) -> str:
        return self.url


class DataRoot:
    """A dataset root: a local folder or an fsspec URL.

    Parameters
    ----------
    root
        Local path or URL such as ``s3://laion-fmri``.
    storage_options
        Passed to fsspec (e.g. ``{"anon": True}`` or ``{"endpoint_url": ...}``); for ``s3`` they
        are completed by `resolve_storage_options` in each process.
    origin
        Where the root came from when the caller did not give it (``"LAION_FMRI_DATA_DIR"``, a
        config file), so that an error about it can name the setting to change; ``""`` otherwise.
    """

    url: str
    storage_options: dict
    origin: str

    def __init__(
        self,
        root: str | os.PathLike | DataRoot,
        storage_options: dict | None = None,
        *,
        origin: str = "",
    ):
        if isinstance(root, DataRoot):
            storage_options = storage_options or root.storage_options
            origin = origin or root.origin
            root = root.url
        text = os.fspath(root)
        if text.startswith("file://"):
            text = text[len("file://") :]
        self.is_local = not is_url(text)
        self.url = str(Path(text).expanduser().resolve()) if self.is_local else text.rstrip("/")
        self.protocol = "file" if self.is_local else self.url.split("://", 1)[0]
        self.storage_options = dict(storage_options or {})
        self.origin = origin
        self._fs: fsspec.AbstractFileSystem | None = None
        self._fs_pid: int | None = None
        self._options: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"DataRoot({self.url!r})"

    @property
    def described(self) -> str:
        """The URL, followed by where the root came from when it was not given (for messages)."""
        return f"{self.url} (the data root set by {self.origin})" if self.origin else self.url

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataRoot) and (self.url, self.storage_options) == (
            other.url,
            other.storage_options,
        )

    def __hash__(self) -> int:
        return hash(self.url)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        state["_fs_pid"] = None
        state["_options"] = {}
        return state

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem, created once per process."""
        if self._fs is None or self._fs_pid != os.getpid():
            if self.is_local:
                self._fs = fsspec.filesystem("file")
            else:
                self._options = resolve_storage_options(self.protocol, self.storage_options)
                self._fs = fsspec.filesystem(self.protocol, **self._options)
            self._fs_pid = os.getpid()
        return self._fs

    @property
    def resolved_options(self) -> dict[str, Any]:
        """The storage options the filesystem of this process was created with."""
        self.fs  # noqa: B018 - creates the filesystem (and the options) on first use
        return dict(self._options)

    @property
    def endpoint(self) -> str:
        """The server a remote root's requests go to (``endpoint_url``, given at the top level of
        the options, in their ``client_kwargs`` or by the environment); ``""`` for a local root or
        the protocol's default server."""
        return "" if self.is_local else str(_endpoint_of(self.resolved_options) or "")

    @property
    def anonymous(self) -> bool:
        """Whether requests to the store are unsigned (public-bucket access)."""
        return bool(self.resolved_options.get("anon"))

    def _remote(self, target: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``call`` on the filesystem, turning remote failures into `RemoteAccessError`."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            translated = remote_error(exc, target, self._options)
            if translated is None:
                raise
            raise translated from exc

    def path(self, *parts: str) -> str:
        """Absolute path or URL of ``parts`` joined under the root."""
        rel = check_relative(posixpath.join(*parts)) if parts else ""
        if not rel:
            return self.url
        return os.path.join(self.url, rel) if self.is_local else f"{self.url}/{rel}"

    def exists(self, *parts: str) -> bool:
        target = self.path(*parts)
        if self.is_local:
            return os.path.exists(target)
        return self._remote(target, self.fs.exists, target)

    def isdir(self, *parts: str) -> bool:
        target = self.path(*parts)
        if self.is_local:
            return os.path.isdir(target)
        return self._remote(target, self.fs.isdir, target)

    def size(self, *parts: str) -> int:
        target = self.path(*parts)
        if self.is_local:
            return os.path.getsize(target)
        return int(self._remote(target, self.fs.size, target))

    def info(self, *parts: str) -> dict[str, Any]:
        """``{"size": bytes, "version": str}`` of a file; ``version`` changes when the file does.

        The version is the ETag on object stores (also ``Content-MD5``/``Digest`` on HTTP), else
        size and modification time (S3 ``LastModified``, HTTP ``Last-Modified``, ``mtime``);
        locally `local_version` (size, mtime, inode and ctime). A remote file that reports none of
        these is versioned by its size alone, with an `UnversionedRemoteWarning` (once per server):
        a replacement of the same size then goes unnoticed.
        """
        target = self.path(*parts)
        if self.is_local:
            return _local_info(target)
        details = self._remote(target, self.fs.info, target)
        if details.get("type") == "directory":
            raise IsADirectoryError(f"{target} is a folder, not a file.")
        if _is_unversioned(details):
            _warn_unversioned(target)
        return _remote_info(details)

    def listdir(self, *parts: str) -> list[str]:
        """Names (not paths) of the entries of a folder, sorted; empty if it does not exist."""
        target = self.path(*parts)
        if self.is_local:
            return sorted(os.listdir(target)) if os.path.isdir(target) else []
        try:
            entries = self._remote(target, self.fs.ls, target, detail=True)
        except FileNotFoundError:
            return []
        stripped = fsspec.core.strip_protocol(target).rstrip("/")
        return sorted(
            posixpath.basename(entry["name"].rstrip("/"))
            for entry in entries
            if entry["name"].rstrip("/") != stripped
        )

    def files(self, *parts: str) -> dict[str, dict[str, Any]]:
        """Every file below a folder, recursively: ``{path relative to the root: info}``.

        ``info`` is what `info` returns (size and version). Empty when the folder does not exist;
        a folder below it that cannot be read is a `DataNotFoundError` (never a silent gap).
        """
        target = self.path(*parts)
        found: dict[str, dict[str, Any]] = {}
        if self.is_local:
            for folder, _, names in os.walk(target, onerror=_unreadable_folder):
                for name in names:
                    full = os.path.join(folder, name)
                    found[os.path.relpath(full, self.url).replace(os.sep, "/")] = _local_info(full)
            return dict(sorted(found.items()))
        try:
            listing = self._remote(target, self.fs.find, target, detail=True)
        except FileNotFoundError:
            return {}
        base = fsspec.core.strip_protocol(self.url).rstrip("/") + "/"
        files = {
            name: details
            for name, details in listing.items()
            if details.get("type") != "directory" and name.startswith(base)
        }
        # an HTTP index page lists names without sizes: each file is asked, several at a time
        # where the filesystem is asynchronous (a synchronous one may hold a single connection)
        sizeless = [name for name, details in files.items() if details.get("size") is None]
        if sizeless:
            at_once = _LOOKUPS_AT_ONCE if getattr(self.fs, "async_impl", False) else 1
            with ThreadPoolExecutor(min(at_once, len(sizeless))) as pool:
                asked = pool.map(lambda name: self._remote(name, self.fs.info, name), sizeless)
                files.update(zip(sizeless, asked, strict=True))
        for name, details in files.items():
            if _is_unversioned(details):
                _warn_unversioned(name)
            found[name[len(base) :]] = _remote_info(details)
        return dict(sorted(found.items()))

    def open(
        self,
        *parts: str,
        mode: str = "rb",
        block_size: int | None = None,
        cache_type: str | None = None,
        version: str | None = None,
        **kwargs: Any,
    ) -> IO:
        """Open a file under the root (binary read by default).

        Remote files opened for reading are read ahead in ``block_size`` requests
        (default `STREAM_BLOCK_SIZE`), suited to a sequential pass; their errors become
        `RemoteAccessError`. A missing file raises ``FileNotFoundError``.

        ``version`` (remote reads): the version (`info`) the file must have. A file that has
        another one when it is opened raises `RemoteAccessError`, and on S3 every read is sent
        with ``If-Match`` on that ETag, so a replacement in the middle of the reads raises it
        too (other stores: compare `info` after reading, as `remote_cache.fetch_file` does).
        """
        target = self.path(*parts)
        if self.is_local:
            return open(target, mode)  # noqa: SIM115 - caller closes
        if "r" not in mode or "+" in mode:
            return self._remote(target, self.fs.open, target, mode, **kwargs)
        encoding = kwargs.pop("encoding", "utf-8")
        s3 = self.protocol in ("s3", "s3a")
        if version is not None and s3:
            # without a size s3fs looks the object up and sends If-Match with its ETag on
            # every ranged GET (a 412 becomes FileExpired, then RemoteAccessError)
            kwargs.pop("size", None)
        elif version is not None:  # the file as it is now (fsspec files know only their size)
            found = self.info(*parts)["version"]
            if found != version:
                raise _replaced_error(target, version, found)
        raw = self._remote(
            target,
            self.fs.open,
            target,
            "rb",
            block_size=block_size or STREAM_BLOCK_SIZE,
            cache_type=cache_type or STREAM_CACHE_TYPE,
            **kwargs,
        )
        wrapped = RemoteFile(raw, target, self._options)
        if version is not None and s3:  # the ETag s3fs looked up, which its reads require
            found = _remote_info(self._remote(target, lambda: raw.details))["version"]
            if found != version:
                wrapped.close()
                raise _replaced_error(target, version, found)
        if "b" in mode:
            return cast(IO[bytes], wrapped)  # a binary file object (io.RawIOBase)
        return io.TextIOWrapper(io.BufferedReader(wrapped), encoding=encoding)

    @contextlib.contextmanager
    def readable(self, relpath: str, **open_options: Any) -> Iterator[Path | IO[bytes]]:
        """The file as a local path (local root) or an open binary handle (remote root).

        What the format readers accept (NIfTI, HDF5): local files are opened by the reader
        itself, remote ones stream through fsspec with ``open_options`` (e.g. ``block_size``).
        """
        if self.is_local:
            yield self.local_path(relpath)
        else:
            with self.open(relpath, **open_options) as handle:
                yield handle

    def local_path(self, *parts: str) -> Path:
        """A local filesystem path of the file: itself when local, a cached copy when remote."""
        if self.is_local:
            return Path(self.path(*parts))
        from neurotorch.io.remote_cache import cached_local_copy

        return cached_local_copy(self, check_relative(posixpath.join(*parts)))
