"""The shared cache (`--cache URL`): where it is, how to reach it, its few operations.

A cache is a prefix in an object store: `s3://bucket/prefix` (AWS S3 or any S3-compatible
service: R2, MinIO...), `gs://bucket/prefix`, `az://container/prefix`, or a folder,
`file:///path`. It holds two things, each with its own module:

    PREFIX/blobs/<sha256><ext>            every stored file, by content (runner.store.blobsync)
    PREFIX/done/<key>.json                a finished step key: what the journal's ``done``
                                          holds, file paths as sha256 references
    PREFIX/ledger/<key>/claim-<n>.json    a runner's create-only claim of a paid submission,
                     beat-<n>.json        its lease renewals, task-<n>.json the task id it
                     task-<n>.json        got, free-<n>.json when it submitted nothing
                     free-<n>.json        (runner.store.ledger)

The store is reached through obstore (the Python binding of the Rust `object_store` crate,
which Arrow, DataFusion and Delta use): one library for S3, GCS, Azure and folders, with
the conditional writes the ledger needs (`mode="create"` is S3's `If-None-Match: *`;
checked against moto's S3 server in the tests). Credentials come only from that library's
usual environment and configuration (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_REGION`; `GOOGLE_*`; `AZURE_*`), never from a recipe; they are
not stored, and every error message is cut to its first line with their values redacted.
An S3-compatible endpoint comes from `AWS_ENDPOINT_URL`, the AWS tools' convention; plain
`http://` is allowed only for a loopback endpoint.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runner.errors import SunoflowError, UsageError

SCHEMES = ("s3", "gs", "az", "file")
ENV = "SUNOFLOW_CACHE"
# The environment variables whose values must never appear in a message.
SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
           "GOOGLE_SERVICE_ACCOUNT_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_KEY",
           "AZURE_CLIENT_SECRET")


class CacheError(SunoflowError):
    """The cache could not be reached or refused a request (exit 1). Raised by `Cache`;
    blob transfers turn it into a warning, the ledger into a stop before paying."""


class Exists(Exception):
    """A create-only write found the object there already (not an error: a lost race)."""


def choose(flag: str | None, recipe_value: str | None,
           env: Mapping[str, str] | None = None) -> str | None:
    """The cache URL in force: `--cache`, else SUNOFLOW_CACHE, else the recipe's
    `provider.cache`. An empty `--cache ''` or SUNOFLOW_CACHE= turns it off."""
    env = os.environ if env is None else env
    for value in (flag, env.get(ENV), recipe_value):
        if value is not None:
            return value or None
    return None


def add_option(p: Any) -> None:
    """`--cache URL` for a subcommand (run, status, clean, push, pull, reroll; `review`
    takes it the same way)."""
    p.add_argument("--cache", metavar="URL",
                   help="share stored files and the paid-work ledger through this cache: "
                   "s3://bucket/prefix, gs://..., az://..., file:///path (default: "
                   f"${ENV}, else the recipe's provider.cache)")


def check_url(url: str) -> str:
    """The URL, or a UsageError naming what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise UsageError(f"--cache {url!r}: use s3://bucket/prefix, gs://bucket/prefix, "
                         "az://container/prefix or file:///path")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"--cache {url!r}: a folder is file:///absolute/path")
    elif not parts.netloc:
        raise UsageError(f"--cache {url!r}: no bucket named")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(f"--cache {url!r}: credentials and options come from the "
                         "environment, not the URL")
    return url.rstrip("/")


def _loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """The first line of a library message, shortened, with every credential's value
    taken out (a library message should hold none; this makes sure)."""
    env = os.environ if env is None else env
    line = text.strip().splitlines()[0] if text.strip() else text
    for name in SECRETS:
        value = env.get(name)
        if value and len(value) >= 4:
            line = line.replace(value, "***")
    return line[:300]


@dataclass
class Stats:
    """Requests made to the cache, by kind (the benchmark and the tests read these)."""

    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, kind: str, took: float) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1
        self.seconds += took


class Cache:
    """One cache: a few async operations on paths under its prefix, errors translated."""

    def __init__(self, url: str, store: Any) -> None:
        self.url = url
        self._store = store
        self.stats = Stats()

    # The one boundary to the library: its exceptions become ours, most specific first.
    def _fail(self, exc: BaseException, what: str, path: str) -> CacheError:
        return CacheError(f"cache {self.url}: cannot {what} {path}: "
                          f"{redact(str(exc) or type(exc).__name__)}")

    # Each request runs obstore's blocking call in a worker thread. Its asyncio calls were
    # tried first: after a failed request, the interpreter aborted at exit in about half
    # of the runs (SIGABRT from the library's runtime meeting a closed event loop), which
    # would turn "exit 1, clear message" into a crash; the blocking calls never did.
    async def _call(self, kind: str, what: str, path: str, fn: Any) -> Any:
        import anyio
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        t = time.monotonic()
        try:
            return await anyio.to_thread.run_sync(fn)
        except (AlreadyExistsError, PreconditionError):
            raise Exists(path) from None
        except FileNotFoundError:  # obstore's NotFoundError is one
            return _ABSENT
        except Exception as exc:  # noqa: BLE001 - the library's errors, translated
            raise self._fail(exc, what, path) from None
        finally:
            self.stats.add(kind, time.monotonic() - t)

    async def head(self, path: str) -> dict[str, Any] | None:
        """The object's metadata (size, e_tag, last_modified), or None when absent."""
        import obstore

        meta = await self._call("head", "check", path, lambda: obstore.head(self._store, path))
        return None if meta is _ABSENT else dict(meta)

    async def get(self, path: str) -> bytes | None:
        import obstore

        data = await self._call("get", "read", path,
                                lambda: bytes(obstore.get(self._store, path).bytes()))
        return None if data is _ABSENT else bytes(data)

    async def get_file(self, path: str, dest: Path) -> bool:
        """Stream the object into `dest` (not atomic: the caller renames it); False when
        absent."""
        import obstore

        def fetch() -> bool:
            res = obstore.get(self._store, path)
            with dest.open("wb") as f:
                for chunk in res.stream(min_chunk_size=1 << 20):
                    f.write(chunk)
            return True

        return await self._call("get", "read", path, fetch) is True

    async def put(self, path: str, data: bytes | Path, *, create: bool = False) -> None:
        """Write the object; `create`: only if absent (S3 If-None-Match), else `Exists`."""
        import obstore

        await self._call("put", "write", path, lambda: obstore.put(
            self._store, path, data, mode="create" if create else "overwrite"))

    async def list(self, prefix: str) -> list[dict[str, Any]]:
        """Every object under `prefix` (paths relative to the cache's prefix)."""
        import obstore

        def listing() -> list[dict[str, Any]]:
            return [dict(m) for chunk in obstore.list(self._store, prefix=prefix)
                    for m in chunk]

        found = await self._call("list", "list", prefix, listing)
        return [] if found is _ABSENT else list(found)


_ABSENT = object()  # what a request for a missing object answers (translated to None)


def open_cache(url: str, env: Mapping[str, str] | None = None) -> Cache:
    """Make the object store client for `url` (no request is made yet)."""
    env = os.environ if env is None else env
    url = check_url(url)
    parts = urlsplit(url)
    try:
        from obstore.store import from_url
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise UsageError("--cache needs the obstore package (pip install obstore)") from None
    # Few quick retries: an unreachable cache must be found out in seconds (blobs then go
    # on locally, the ledger stops), not after the library's default three minutes.
    retry = {"max_retries": 2, "retry_timeout": timedelta(seconds=10),
             "backoff": {"init_backoff": timedelta(milliseconds=100),
                         "max_backoff": timedelta(seconds=1), "base": 2}}
    client: dict[str, Any] = {"connect_timeout": "5s", "timeout": "60s"}
    kw: dict[str, Any] = {}
    if parts.scheme == "s3":
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            ep = urlsplit(endpoint)
            if ep.scheme == "http":
                if not _loopback(ep.hostname):
                    raise UsageError(f"AWS_ENDPOINT_URL {endpoint}: plain http is allowed "
                                     "only for a loopback endpoint (127.0.0.1, ::1, "
                                     "localhost); use https")
                client["allow_http"] = True
            elif ep.scheme != "https":
                raise UsageError(f"AWS_ENDPOINT_URL {endpoint}: not an http(s) URL")
            kw["config"] = {"endpoint": endpoint,
                            # Path-style (endpoint/bucket/key): what MinIO, moto and most
                            # S3-compatible services serve without DNS set up per bucket.
                            "virtual_hosted_style_request": False}
    elif parts.scheme == "file":
        Path(parts.path).mkdir(parents=True, exist_ok=True)
        return Cache(url, from_url(url))
    try:
        make: Any = from_url  # typed per scheme; the options above are built per scheme
        store = make(url, client_options=client, retry_config=retry, **kw)
    except Exception as exc:  # noqa: BLE001 - a bad URL or configuration, said plainly
        raise UsageError(f"--cache {url}: {redact(str(exc))}") from None
    return Cache(url, store)
