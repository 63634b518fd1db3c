"""A real S3-compatible server on loopback for the cache tests: moto's server mode, which
speaks the S3 HTTP API (conditional writes included: `If-None-Match: *` answers 412 when
the object exists, checked by test_cache.test_the_server_honours_create_only_writes).

moto keeps its buckets in this test process, shared by every server it starts, so each
server gets a bucket of its own name. `stop()` takes the server away (an unreachable
cache); the processes under test reach it only over HTTP.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

# Fake credentials, distinctive so that a test can prove they are written nowhere.
ACCESS_KEY = "AKIATESTCACHEKEY0042"
SECRET_KEY = "s3cr3t-never-print-me-7f9a2c41d0b8e6"


class S3Server:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.bucket = "sunoflow-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=self.bucket)
        self.running = True

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/album-cache"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def keys(self, prefix: str = "") -> list[str]:
        """Object names under the cache's prefix (relative to it)."""
        out: list[str] = []
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix="album-cache/" + prefix)
        for page in pages:
            out += [o["Key"][len("album-cache/"):] for o in page.get("Contents", [])]
        return out

    def read(self, name: str) -> bytes:
        body = self.client().get_object(Bucket=self.bucket, Key="album-cache/" + name)["Body"]
        return bytes(body.read())

    def write(self, name: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key="album-cache/" + name, Body=data)

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._server.stop()
