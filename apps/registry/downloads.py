"""Downloads of registry folders: a zip written as it is sent, with no temporary copy and bounded memory.

Python's zipfile writes to a stream it cannot seek: each member's sizes and CRC then follow its bytes (a data
descriptor) and the central directory ends the stream, so nothing is held back but one chunk. Members are
stored, not deflated: safetensors weights do not compress. The archive holds the files a version recorded (its
checksums) and its SHA256SUMS, in a stable order, so a user can check what they got with `sha256sum -c`.

Under ASGI, Django reads a *sync* iterator to its end before sending anything (the whole archive in memory),
and a thread that produced ahead of a slow client would queue it all the same: `_pulled_in_threads` makes the
next chunk only when the previous one went out, and closes the files when the client goes away.
"""

from __future__ import annotations

import asyncio
import threading
import zipfile
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from apps.core.errors import ServerError
from apps.registry.artifacts import CHECKSUMS_FILE

CHUNK_BYTES = 1 << 20  # what one read of a file and one send hold in memory


class _Pipe:
    """The writable end that zipfile writes to; what it holds is taken out and sent after each write."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_chunks(folder: Path, names: Iterable[str], *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The zip of `folder`'s files `names` (relative paths), in pieces of about `chunk_bytes`."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in names:
            path = folder / name
            info = zipfile.ZipInfo.from_file(path, name, strict_timestamps=False)
            info.external_attr = 0o100644 << 16  # a regular file the user may edit (version files are 0444)
            with open(path, "rb") as source, archive.open(info, "w") as member:
                while block := source.read(chunk_bytes):
                    member.write(block)
                    yield pipe.take()
            if data := pipe.take():  # the member's data descriptor
                yield data
    yield pipe.take()  # the central directory


def folder_files(folder: Path, checksums: dict[str, str]) -> list[str]:
    """The files a download of `folder` holds: those its checksums name, and SHA256SUMS. A ServerError when one
    is missing, raised before the first byte is sent (a broken archive would tell the user nothing)."""
    names = sorted(checksums) + [CHECKSUMS_FILE]
    if not all((folder / name).is_file() for name in names):
        raise ServerError("The files of this model are not all on the server right now; try again later.",
                          code="files_missing")
    return names


def _pulled_in_threads(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Each chunk made in a worker thread when the previous one was sent; the files close when sending stops."""
    lock = threading.Lock()  # a close asked while a chunk is being made waits for it to be made

    def step() -> bytes | None:
        with lock:
            return next(chunks, None)

    def close() -> None:
        with lock:
            chunks.close()

    async def agen():
        try:
            while (block := await asyncio.to_thread(step)) is not None:
                yield block
        finally:
            await asyncio.to_thread(close)

    return agen()


def zip_response(request, *, folder: Path, names: list[str], filename: str) -> StreamingHttpResponse:
    """A streamed `application/zip` attachment named `filename` (no Content-Length: it is written as it goes)."""
    chunks = zip_chunks(folder, names)
    content = _pulled_in_threads(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    response["X-Accel-Buffering"] = "no"  # a proxy (nginx) passes it on instead of spooling it to its disk
    return response
