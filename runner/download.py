"""Downloading result files into the store.

A download streams to a temporary file in the store's tmp/ folder, hashing as it goes,
checks the length the server announced, and only then is renamed into the
content-addressed store: a killed run leaves at most a stray partial file, never a corrupt
blob. Only http(s) URLs are fetched, redirects are bounded and never leave http(s), and
size is capped. File downloads are not counted against the service's rate limit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from runner.errors import TransientError
from runner.store import Store

MAX_BYTES = 512 * 1024 * 1024
MAX_REDIRECTS = 5


class LinkExpired(Exception):
    """The server says the file is gone (403/404/410): ask the provider for a fresh link."""


class DownloadRejected(Exception):
    """A URL we refuse to fetch (scheme, size)."""


def suffix_for(url: str, content_type: str | None = None) -> str:
    path = urlsplit(url).path
    ext = os.path.splitext(path)[1].lower()
    if ext and len(ext) <= 6 and ext[1:].isalnum():
        return ext
    ct = (content_type or "").split(";")[0].strip()
    return {"audio/mpeg": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav",
            "audio/flac": ".flac", "video/mp4": ".mp4", "image/jpeg": ".jpg",
            "image/png": ".png", "audio/mp4": ".m4a"}.get(ct, "")


async def fetch(client: httpx.AsyncClient, url: str, store: Store, *,
                max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Download `url` into the store; return {path, sha256, size, url}."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadRejected(f"refusing to download {url!r}: only http(s) URLs")
    store.tmp.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=store.tmp, suffix=".part")
    tmp = Path(tmp_name)
    try:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            async with client.stream("GET", current, follow_redirects=False) as resp:
                if resp.is_redirect:
                    nxt = str(resp.url.join(resp.headers.get("location", "")))
                    if urlsplit(nxt).scheme not in ("http", "https"):
                        raise DownloadRejected(f"redirect to a non-http URL refused: {nxt}")
                    current = nxt
                    continue
                if resp.status_code in (403, 404, 410):
                    raise LinkExpired(f"{url}: HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    raise TransientError(f"download {url}: HTTP {resp.status_code}")
                expected = resp.headers.get("content-length")
                if expected is not None and int(expected) > max_bytes:
                    raise DownloadRejected(f"{url} is {int(expected)} bytes; the cap is "
                                           f"{max_bytes}")
                got = 0
                with os.fdopen(fd, "wb") as f:
                    fd = -1
                    async for chunk in resp.aiter_bytes(1 << 16):
                        got += len(chunk)
                        if got > max_bytes:
                            raise DownloadRejected(f"{url} exceeds the {max_bytes}-byte cap")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                if expected is not None and got != int(expected):
                    raise TransientError(f"download {url}: got {got} of {expected} bytes")
                ext = suffix_for(current, resp.headers.get("content-type"))
                break
        else:
            raise DownloadRejected(f"{url}: more than {MAX_REDIRECTS} redirects")
        final = tmp.with_suffix(ext) if ext else tmp.with_suffix("")
        os.replace(tmp, final)
        info = await anyio.to_thread.run_sync(store.ingest, final)
        return {**info, "url": url}
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise TransientError(f"download {url}: {type(exc).__name__}: {exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)  # noqa: ASYNC240 - cleanup of a scratch file
