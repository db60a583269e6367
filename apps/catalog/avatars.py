"""Uploaded app avatars: checked (type, size, dimensions), then re-encoded as a small PNG.

Re-encoding keeps only pixels: no metadata, no second file format hiding in the bytes, a known size on disk.
"""

from __future__ import annotations

import io
import uuid

from django.core.files.base import ContentFile
from django.utils.translation import gettext as _

from apps.core.errors import InvalidRequest

MAX_BYTES = 1 * 2**20
MIN_SIDE, MAX_SIDE = 64, 4096
ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
OUTPUT_SIDE = 256


def avatar_process(upload) -> ContentFile:
    from PIL import Image, UnidentifiedImageError

    if upload.size > MAX_BYTES:
        raise InvalidRequest(_("The image is larger than 1 MB."), param="avatar")
    data = upload.read()
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # a truncated or corrupt file fails here
        image = Image.open(io.BytesIO(data))
        image_format = image.format
        width, height = image.size
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(_("That file is not an image we can read (PNG, JPEG, WebP or GIF)."), param="avatar") from exc
    if image_format not in ACCEPTED_FORMATS:
        raise InvalidRequest(_("Use a PNG, JPEG, WebP or GIF image."), param="avatar")
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        raise InvalidRequest(
            _("The image must be between %(min)s and %(max)s pixels on each side.") % {"min": MIN_SIDE, "max": MAX_SIDE},
            param="avatar",
        )
    side = min(width, height)  # centre square crop, then scale
    left, top = (width - side) // 2, (height - side) // 2
    square = image.convert("RGBA").crop((left, top, left + side, top + side)).resize((OUTPUT_SIDE, OUTPUT_SIDE))
    out = io.BytesIO()
    square.save(out, format="PNG", optimize=True)
    return ContentFile(out.getvalue(), name=f"{uuid.uuid4().hex}.png")
