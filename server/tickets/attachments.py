"""Photos and files on ticket comments and resolutions: checked by content, stored by hash.

The type is read from the bytes (JPEG, PNG, WebP, PDF), never from the name or the
client's content type; images must also open as images. Each file is stored once under
``<attachments_dir>/<first two hex digits>/<sha256>``, written to a temporary name and
renamed, so a reader never sees half a file. A file written by a request that then rolls
back stays as an unreferenced blob (harmless: it is only served through a database row).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from litestar.datastructures import UploadFile
from PIL import Image

from server.errors import Problem

MAX_BYTES: Final = 10 * 1024 * 1024
MAX_FILES: Final = 5
# What one multipart request may carry: the files and a little room for the form fields.
MAX_REQUEST_BYTES: Final = MAX_FILES * MAX_BYTES + 256 * 1024
ALLOWED: Final = ("image/jpeg", "image/png", "image/webp", "application/pdf")


class UnsupportedFile(Problem):
    status, slug, title = 415, "unsupported-attachment", "Unsupported attachment"


class AttachmentTooLarge(Problem):
    status, slug, title = 413, "attachment-too-large", "Attachment too large"


@dataclass(frozen=True, slots=True)
class Upload:
    """A checked file, ready to store."""

    data: bytes
    content_type: str
    sha256: str
    name: str


def sniff(data: bytes) -> str | None:
    """The content type the bytes say they are (one of ALLOWED), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def _genuine(data: bytes, content_type: str) -> bool:
    """Whether the whole file is what its header claims (not a header glued to anything)."""
    if content_type == "application/pdf":
        return b"%%EOF" in data[-1024:]
    expected = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}[content_type]
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != expected:
                return False
            image.verify()
    except Exception:  # Pillow raises many kinds for broken or hostile images
        return False
    return True


def clean_name(name: str | None) -> str:
    """The client's file name without any path or control characters, at most 255 long."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    return printable.strip()[:255]


async def read_upload(upload: UploadFile, field: str) -> Upload:
    """Read one uploaded file within the limit and check its type by content."""
    data = await upload.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise AttachmentTooLarge(
            f"{field}: a file may be at most {MAX_BYTES // (1024 * 1024)} MiB",
            field=field,
            max_bytes=MAX_BYTES,
        )
    if not data:
        raise UnsupportedFile(f"{field}: the file is empty", field=field, allowed=list(ALLOWED))
    content_type = sniff(data)
    if content_type is None or not await asyncio.to_thread(_genuine, data, content_type):
        raise UnsupportedFile(
            f"{field}: only JPEG, PNG and WebP photos and PDF documents are accepted",
            field=field,
            allowed=list(ALLOWED),
        )
    return Upload(
        data=data,
        content_type=content_type,
        sha256=hashlib.sha256(data).hexdigest(),
        name=clean_name(upload.filename),
    )


def blob_path(root: Path, sha256: str) -> Path:
    return root / sha256[:2] / sha256


def _write(root: Path, upload: Upload) -> None:
    target = blob_path(root, upload.sha256)
    if target.exists():
        return  # content-addressed: the same bytes are already there
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(upload.data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def save(root: Path, upload: Upload) -> None:
    """Store the bytes under their hash (once; durable before the row commits)."""
    await asyncio.to_thread(_write, root, upload)
