"""One node's S3 client (aiobotocore), with the few operations the file store needs.

Credentials come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN``) only, handed to the client explicitly: botocore's other
sources (config files, instance metadata) are never consulted, and the values
are never logged. Path-style addressing works with every S3-compatible server.
Every failure to reach S3 (refused, timed out, a 5xx) is ``BackendUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from edgenet.server.interfaces import BackendUnavailable

#: Objects up to this size go in one PUT; bigger ones in parts of this size.
PART_SIZE = 8 * 2**20
READ_BLOCK = 1 << 20
UNAVAILABLE = "the file storage (S3) is unreachable; nothing was changed; try again shortly"
_MISSING = ("NoSuchKey", "404", "NotFound")


class S3SetupError(Exception):
    """S3 cannot be used as configured (credentials missing): one line at start-up."""


def credentials_from(environ: Mapping[str, str]) -> dict[str, str]:
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise S3SetupError("--files s3://... needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                           "in the environment")
    creds = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    if environ.get("AWS_SESSION_TOKEN"):
        creds["aws_session_token"] = environ["AWS_SESSION_TOKEN"]
    return creds


class S3Link:
    def __init__(self, bucket: str, prefix: str, endpoint: str | None, region: str,
                 credentials: dict[str, str]) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._endpoint = endpoint
        self._region = region
        self._credentials = credentials
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._up = True

    async def open(self) -> None:
        config = AioConfig(connect_timeout=3, read_timeout=20, s3={"addressing_style": "path"},
                           retries={"max_attempts": 2, "mode": "standard"})
        session = get_session()
        self._client = await self._stack.enter_async_context(session.create_client(
            "s3", region_name=self._region, endpoint_url=self._endpoint, config=config,
            **self._credentials))

    async def close(self) -> None:
        await self._stack.aclose()

    def ready(self) -> bool:
        return self._up

    def object_key(self, device: str, file_id: int, upload: str) -> str:
        name = f"{device}/{file_id}/{upload}.txt"
        return f"{self.prefix}/{name}" if self.prefix else name

    async def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            result = await getattr(self._client, op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _MISSING or status == 404:
                raise
            if status >= 500 or status == 0:
                self._up = False
                raise BackendUnavailable(UNAVAILABLE) from None
            raise
        except (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError):
            self._up = False
            raise BackendUnavailable(UNAVAILABLE) from None
        self._up = True
        return result

    async def check(self) -> None:
        await self._call("head_bucket")

    async def put_file(self, key: str, path: Path, size: int) -> None:
        if size <= PART_SIZE:
            body = await asyncio.to_thread(path.read_bytes)
            await self._call("put_object", Key=key, Body=body)
            return
        started = await self._call("create_multipart_upload", Key=key)
        upload_id = started["UploadId"]
        try:
            parts = []
            with path.open("rb") as fh:
                number = 1
                while chunk := await asyncio.to_thread(fh.read, PART_SIZE):
                    done = await self._call("upload_part", Key=key, UploadId=upload_id,
                                            PartNumber=number, Body=chunk)
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
                    number += 1
            await self._call("complete_multipart_upload", Key=key, UploadId=upload_id,
                             MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(BackendUnavailable, ClientError):
                await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
            raise

    async def scan(self, key: str, feed: Callable[[bytes], None]) -> bool:
        """Stream the object's bytes to ``feed`` (in a worker thread, a block at a time).
        False when there is no such object."""
        try:
            resp = await self._call("get_object", Key=key)
        except ClientError:
            return False
        try:
            async with resp["Body"] as stream:
                while block := await stream.read(READ_BLOCK):
                    await asyncio.to_thread(feed, block)
        except (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError):
            self._up = False
            raise BackendUnavailable(UNAVAILABLE) from None
        return True

    async def delete(self, key: str) -> None:
        with contextlib.suppress(ClientError):
            await self._call("delete_object", Key=key)

    async def keys_older_than(self, seconds: float) -> list[str]:
        cutoff = time.time() - seconds
        keys: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = await self._call("list_objects_v2", Prefix=f"{self.prefix}/" if self.prefix
                                    else "", **extra)
            for obj in page.get("Contents", []):
                if obj["LastModified"].timestamp() < cutoff:
                    keys.append(str(obj["Key"]))
            if not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")
