"""A checked upload for stores that keep no partials: the body's SHA-256 (and size) is
compared with what the device announced before the inner upload commits."""

from __future__ import annotations

import hashlib

from edgenet.server.interfaces import ChecksumMismatch, PendingUpload, StoredFile


def mismatch_text(expected_size: int, got_size: int) -> str:
    if expected_size != got_size:
        return (f"the file received is {got_size} bytes, not the {expected_size} announced; "
                "nothing stored")
    return "the file received does not match its SHA-256 (it changed while it was sent?); " \
           "nothing stored"


class ChecksummedUpload:
    """``inner`` (a whole-file upload), hashing what it is given."""

    def __init__(self, inner: PendingUpload, sha256: str, size: int) -> None:
        self._inner = inner
        self._expected = sha256
        self._size = size
        self._hash = hashlib.sha256()
        self._got = 0

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._got += len(chunk)
        self._inner.write(chunk)

    async def commit(self, now: float) -> StoredFile:
        if self._got != self._size or self._hash.hexdigest() != self._expected:
            self._inner.abort()
            raise ChecksumMismatch(mismatch_text(self._size, self._got))
        return await self._inner.commit(now)

    def abort(self) -> None:
        self._inner.abort()
