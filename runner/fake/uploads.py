"""The file-upload host of sunoapi.org (REFERENCE 2.20), served by the same fake.

Uploaded files live in memory under /files/uploads/<uploadPath>/<fileName> and are
answered with `{success, code, msg, data}`. Nothing is fetched from the network: a
`fileUrl` on this server is copied, one on another loopback server is downloaded, and any
other URL stands for a tone of `upload_duration` seconds.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import mimetypes
import re
import urllib.request
from email.message import Message
from urllib.parse import unquote, urlsplit

from runner.fake.server import ApiError, Request, Response
from runner.fake.state import Resource, World
from runner.fake.validation import json_object, required_string, string


def _sniff_mime(data: bytes, name: str) -> str:
    guessed = mimetypes.guess_type(name)[0]
    if guessed:
        return guessed
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if data.startswith(b"RIFF"):
        return "audio/wav"
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[4:8] == b"ftyp":
        return "audio/mp4"
    return "application/octet-stream"


def _multipart(req: Request) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    header = Message()
    header["content-type"] = req.headers.get("Content-Type") or ""
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise ApiError(400, "expected a multipart/form-data body")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in req.body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition["content-disposition"] = value.strip()
        field_name = disposition.get_param("name", header="content-disposition")
        if isinstance(field_name, str):
            fields[field_name] = (disposition.get_filename(), data.removesuffix(b"\r\n"))
    return fields


class UploadHost:
    def __init__(self, world: World) -> None:
        self.world = world

    def _store(
        self, req: Request, data: bytes, upload_path: str, name: str | None, mime: str | None = None
    ) -> Response:
        if upload_path.startswith("/") or upload_path.endswith("/"):
            raise ApiError(400, "uploadPath must not start or end with '/'")
        mime = mime or _sniff_mime(data, name or "")
        if not name:
            ext = mimetypes.guess_extension(mime) or ".bin"
            name = f"{self.world.new_hex()[:16]}{ext}"
        if "/" in name:
            raise ApiError(400, "fileName must not contain '/'")
        key = f"uploads/{upload_path}/{name}"
        self.world.add_file(key, Resource("bytes", data=data, mime=mime))  # same name overwrites
        uploaded = dt.datetime.fromtimestamp(self.world.epoch_ms(self.world.now()) / 1000, dt.UTC)
        return Response.json_body(
            {
                "success": True,
                "code": 200,
                "msg": "File uploaded successfully",
                "data": {
                    "fileName": name,
                    "filePath": f"{upload_path}/{name}",
                    "downloadUrl": self.world.url(req.base, key),
                    "fileSize": len(data),
                    "mimeType": mime,
                    "uploadedAt": uploaded.isoformat(),
                },
            },
            envelope_code=200,
        )

    def upload_base64(self, req: Request) -> Response:
        body = json_object(req)
        raw = required_string(body, "base64Data")
        upload_path = required_string(body, "uploadPath")
        name = string(body, "fileName", required=False)
        mime = None
        found = re.match(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?,", raw)
        if found:
            mime, raw = found.group(1), raw[found.end() :]
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "base64Data is not valid base64") from None
        return self._store(req, data, upload_path, name, mime)

    def upload_stream(self, req: Request) -> Response:
        fields = _multipart(req)
        if "file" not in fields:
            raise ApiError(400, "file is required")
        filename, data = fields["file"]
        upload_path = fields.get("uploadPath", (None, b""))[1].decode()
        if not upload_path:
            raise ApiError(400, "uploadPath is required")
        name = fields.get("fileName", (None, b""))[1].decode() or filename
        return self._store(req, data, upload_path, name)

    def upload_url(self, req: Request) -> Response:
        body = json_object(req)
        url = required_string(body, "fileUrl")
        upload_path = required_string(body, "uploadPath")
        name = string(body, "fileName", required=False)
        if not re.match(r"^https?://[^\s/]+", url):
            raise ApiError(400, "fileUrl must be an http(s) URL")
        ours, resource = self.world.own_resource(url, req.base)
        host = urlsplit(url).hostname or ""
        if ours:
            if resource is None:
                raise ApiError(500, f"failed to download {url}")
            data = resource.content()
        elif host in ("127.0.0.1", "localhost", "::1"):
            # Another server on this machine (a test's): fetch it, never through a proxy.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(url, timeout=30) as answer:
                    data = answer.read()
            except OSError as exc:
                raise ApiError(500, f"failed to download {url}: {exc}") from None
        else:
            # No network: an outside URL stands for a tone of the configured length.
            seconds = self.world.config["upload_duration"] or self.world.config["clip_duration"]
            data = Resource("mp3", float(seconds)).content()
        default_name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or None
        return self._store(req, data, upload_path, name or default_name)
