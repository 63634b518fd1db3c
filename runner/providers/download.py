"""Downloading result files into the store (a Destination: this module never imports the
store).

A download streams to a temporary file in the store's tmp/ folder, hashing as it goes,
checks the length the server announced, and only then is renamed into the
content-addressed store: a killed run leaves at most a stray partial file, never a corrupt
blob. File downloads are not counted against the service's rate limit.

The URLs come from the service's answers, so they are untrusted like the recipe: only
http(s) is fetched, redirects are followed here (never by httpx), at most MAX_REDIRECTS of
them and never to another scheme (`file:`, `ftp:`, `data:` ...); the body is capped
(`max_download_bytes` in the provider block, MAX_BYTES by default) whether or not the
server announces its length; each read waits at most the client's read timeout and the
whole download at most DEADLINE seconds; content encodings are refused up front
(`Accept-Encoding: identity`), so the cap counts the bytes that land on disk.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import urlsplit

import anyio

from runner import paths
from runner.errors import TransientError
from runner.recipe.model import DEFAULT_MAX_DOWNLOAD

if TYPE_CHECKING:
    import httpx  # imported when a download starts: a run that fetches nothing skips it

MAX_BYTES = DEFAULT_MAX_DOWNLOAD
MAX_REDIRECTS = 5
DEADLINE = 3600.0  # seconds for one whole download, however slowly it trickles
HTTP_SCHEMES = ("http", "https")
WRITE_BATCH = 1 << 20  # bytes handed to the writer thread at a time


class Destination(Protocol):
    """Where downloads land (runner.store.journal.Store is one): a scratch folder on the
    same file system, and `ingest`, which moves a finished file into content-addressed
    storage and returns {path, sha256, size}."""

    @property
    def root(self) -> Path: ...

    @property
    def tmp(self) -> Path: ...

    def ingest(self, path: Path) -> dict[str, Any]: ...


class LinkExpired(Exception):
    """The server says the file is gone (403/404/410): ask the provider for a fresh link."""


class DownloadRejected(Exception):
    """A URL or an answer we refuse (scheme, redirects, size, time): retrying will not help."""


@dataclass(frozen=True)
class Streamed:
    size: int
    sha256: str
    url: str  # after redirects
    content_type: str | None


def suffix_for(url: str, content_type: str | None = None) -> str:
    ext = paths.file_suffix(urlsplit(url).path)
    if ext:
        return ext
    ct = (content_type or "").split(";")[0].strip()
    return {"audio/mpeg": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav",
            "audio/flac": ".flac", "video/mp4": ".mp4", "image/jpeg": ".jpg",
            "image/png": ".png", "audio/mp4": ".m4a"}.get(ct, "")


def _shown(url: str) -> str:
    """A URL for a message: without its query (signed links carry tokens there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else url[:200]


def _check_scheme(url: str, what: str, shown: str | None = None) -> None:
    if urlsplit(url).scheme.lower() not in HTTP_SCHEMES:
        raise DownloadRejected(f"{what} {_shown(shown or url)!r} refused: only http(s) URLs "
                               "are fetched")


async def stream_to(client: httpx.AsyncClient, url: str, dest: Path, *,
                    max_bytes: int = MAX_BYTES, deadline: float = DEADLINE) -> Streamed:
    """Stream `url` into the new file `dest` (fsynced), following at most MAX_REDIRECTS
    http(s) redirects. Raises LinkExpired, DownloadRejected or TransientError; `dest` may
    then hold a partial file, which the caller removes."""
    import httpx

    _check_scheme(url, "download of")
    try:
        with anyio.fail_after(deadline):
            return await _stream(client, url, dest, max_bytes)
    except TimeoutError:
        raise DownloadRejected(f"{_shown(url)}: not complete after {deadline:g} s") from None
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise TransientError(f"download {_shown(url)}: {type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        # httpx parses a redirect's Location even when it does not follow it.
        raise DownloadRejected(f"{_shown(url)}: a redirect to an invalid URL ({exc})") from None


async def _stream(client: httpx.AsyncClient, url: str, dest: Path,
                  max_bytes: int) -> Streamed:
    import httpx  # here, not at the top: a run that downloads nothing never imports httpx

    from runner.providers import httpclient

    current = url
    for _ in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", current, follow_redirects=False,
                                 headers={"Accept-Encoding": "identity"}) as resp:
            if 300 <= resp.status_code < 400:
                location = resp.headers.get("location")
                if not location:
                    raise DownloadRejected(f"{_shown(current)}: HTTP {resp.status_code} "
                                           "without a Location")
                what = f"redirect from {_shown(current)} to"
                if urlsplit(location).scheme:  # absolute: judge it before parsing further
                    _check_scheme(location, what)
                try:
                    nxt = str(resp.url.join(location))
                except httpx.InvalidURL:
                    raise DownloadRejected(f"{what} {location[:200]!r}: not a URL") from None
                _check_scheme(nxt, what, location)
                current = nxt
                continue
            if resp.status_code in (403, 404, 410):
                raise LinkExpired(f"{_shown(url)}: HTTP {resp.status_code}")
            if not 200 <= resp.status_code < 300:
                raise TransientError(f"download {_shown(url)}: HTTP {resp.status_code}")
            if resp.headers.get("content-encoding", "identity").lower() != "identity":
                raise DownloadRejected(f"{_shown(url)}: sent with Content-Encoding "
                                       f"{resp.headers['content-encoding']!r} after we asked "
                                       "for none")
            _not_a_playlist(current, resp.headers.get("content-type"))
            expected = _length(resp.headers.get("content-length"), url)
            if expected is not None and expected > max_bytes:
                raise DownloadRejected(f"{_shown(url)} is {expected:,} bytes; the cap is "
                                       f"{max_bytes:,} (max_download_bytes)")
            h = hashlib.sha256()
            got = 0
            with dest.open("xb") as f:
                # The disk work (write, hash, fsync) runs in a worker thread, a batch at a
                # time: on the event loop, each file's writes and fsync held up every other
                # request, callback and rate-limit grant of the run (a 2 MB WAV: ~10 ms).
                batch: list[bytes] = []
                pending = 0
                async with httpclient.chunks(resp, 1 << 16, raw=True) as body:
                    async for chunk in body:
                        if got == 0 and chunk.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U"):
                            raise DownloadRejected(f"{_shown(url)} is an HLS playlist (#EXTM3U), "
                                                   "not an audio file; sunoflow stores whole files "
                                                   "only")
                        got += len(chunk)
                        if got > max_bytes:
                            raise DownloadRejected(f"{_shown(url)} exceeds the cap of "
                                                   f"{max_bytes:,} bytes (max_download_bytes)")
                        batch.append(chunk)
                        pending += len(chunk)
                        if pending >= WRITE_BATCH:
                            await anyio.to_thread.run_sync(_write, f, h, batch)
                            batch, pending = [], 0
                await anyio.to_thread.run_sync(_write, f, h, batch, True)
            if expected is not None and got != expected:
                raise TransientError(f"download {_shown(url)}: got {got:,} of {expected:,} "
                                     "bytes")
            if expected is not None and _more_than_announced(resp):
                # The length announced was short: what we have is a cut file that would
                # decode (an MP3 plays to where it was cut). Fetched again, it may be whole.
                raise TransientError(f"download {_shown(url)}: the server sent more than "
                                     f"the {expected:,} bytes its Content-Length announced")
            return Streamed(got, h.hexdigest(), current, resp.headers.get("content-type"))
    raise DownloadRejected(f"{_shown(url)}: more than {MAX_REDIRECTS} redirects")


PLAYLIST_TYPES = frozenset({"application/vnd.apple.mpegurl", "application/x-mpegurl",
                            "audio/mpegurl", "audio/x-mpegurl", "audio/x-scpls"})
PLAYLIST_SUFFIXES = (".m3u8", ".m3u", ".pls")


def _not_a_playlist(url: str, content_type: str | None) -> None:
    """A playlist (an HLS stream's .m3u8) lists other URLs; stored, it would be a text
    file named song.mp3. Refused by its name, its type, or (in _stream) its first line."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct in PLAYLIST_TYPES or urlsplit(url).path.lower().endswith(PLAYLIST_SUFFIXES):
        raise DownloadRejected(f"{_shown(url)} is a playlist ({ct or 'by its name'}), not "
                               "an audio file; sunoflow stores whole files only")


def _more_than_announced(resp: httpx.Response) -> bool:
    """Whether bytes followed the body that Content-Length announced, read with it into
    h11's buffer. Best effort: it reads httpcore's private state, and answers False where
    it does not find it (another transport, a future httpcore), and bytes that arrive
    only after the body was read are not seen."""
    node: Any = resp.stream
    for attr in ("_stream", "_httpcore_stream", "_stream", "_connection", "_h11_state"):
        node = getattr(node, attr, node)
    trailing = getattr(node, "trailing_data", None)
    if isinstance(trailing, tuple) and trailing and trailing[0]:
        return True
    return False


def _write(f: BinaryIO, h: Any, chunks: list[bytes], last: bool = False) -> None:
    """Hash and write `chunks` (in a worker thread); `last`: then flush and fsync."""
    for chunk in chunks:
        h.update(chunk)
        f.write(chunk)
    if last:
        f.flush()
        os.fsync(f.fileno())


def _length(value: str | None, url: str) -> int | None:
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        n = -1
    if n < 0:
        raise TransientError(f"download {_shown(url)}: bad Content-Length {value[:40]!r}")
    return n


async def fetch(client: httpx.AsyncClient, url: str, store: Destination, *,
                max_bytes: int = MAX_BYTES, deadline: float = DEADLINE) -> dict[str, Any]:
    """Download `url` into `store`; return {path, sha256, size, url}."""
    _check_scheme(url, "download of")
    tmp = store.tmp / f"{secrets.token_hex(8)}.part"
    final: Path | None = None
    try:
        store.tmp.mkdir(parents=True, exist_ok=True)
        got = await stream_to(client, url, tmp, max_bytes=max_bytes, deadline=deadline)
        ext = suffix_for(got.url, got.content_type)
        final = tmp.with_suffix(ext) if ext else tmp.with_suffix("")
        os.replace(tmp, final)
        info = await anyio.to_thread.run_sync(store.ingest, final)
        return {**info, "url": url}
    except OSError as exc:
        # This machine's disk (full, read-only, failing): the task stays recorded, so the
        # next run fetches it again instead of paying.
        raise DownloadRejected(f"cannot store the download of {_shown(url)} in "
                               f"{store.root}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)  # noqa: ASYNC240 - cleanup of a scratch file
        if final is not None:
            final.unlink(missing_ok=True)  # noqa: ASYNC240 - ingest moved it, or it failed


class Downloader:
    """A run's files client (the engine's records.FilesClient): downloads into a
    Destination over one HTTP client, made on first use, so a run that downloads nothing
    never makes one. Whoever makes it closes it (`aclose`)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def fetch(self, url: str, dest: Destination, *,
                    max_bytes: int = MAX_BYTES) -> dict[str, Any]:
        if self._client is None:
            import httpx

            from runner.providers.httpclient import async_client

            self._client = async_client(timeout=httpx.Timeout(self.timeout, connect=10.0))
        return await fetch(self._client, url, dest, max_bytes=max_bytes)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
