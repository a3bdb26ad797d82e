"""Checking what users upload before anything else touches it.

An upload is accepted only if it is small enough in bytes, its header declares few enough
pixels (checked before the pixels are decoded, so a decompression bomb costs nothing), and
Pillow decodes it fully as one of the allowed formats; the extension and the browser's
claimed type are not trusted. Accepted images are stored under the SHA-256 of their bytes,
so a user's file name never becomes a path.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import StudioError

MAX_UPLOAD_MB_ENV = "STUDIO_MAX_UPLOAD_MB"
MAX_PIXELS_ENV = "STUDIO_MAX_UPLOAD_PIXELS"
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_PIXELS = 4096 * 4096
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
MAX_ELEMENTS = 3


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_pixels: int

    @classmethod
    def from_env(cls) -> UploadLimits:
        mb = float(os.environ.get(MAX_UPLOAD_MB_ENV) or DEFAULT_MAX_UPLOAD_MB)
        px = int(os.environ.get(MAX_PIXELS_ENV) or DEFAULT_MAX_PIXELS)
        return cls(max_bytes=int(mb * 1024 * 1024), max_pixels=px)


def check_image(data: bytes, limits: UploadLimits, name: str = "upload") -> Image.Image:
    """The decoded RGB image, or StudioError saying what is wrong with ``data``."""
    label = os.path.basename(str(name))[:80] or "upload"
    if len(data) == 0:
        raise StudioError(f"{label} is empty")
    if len(data) > limits.max_bytes:
        raise StudioError(
            f"{label} is {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB"
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            w, h = img.size
            if fmt not in ALLOWED_FORMATS:
                raise StudioError(
                    f"{label} is {fmt or 'an unknown format'}; allowed: {', '.join(ALLOWED_FORMATS)}"
                )
            if w * h > limits.max_pixels:
                raise StudioError(
                    f"{label} is {w}×{h} = {w * h:,} pixels; the limit is {limits.max_pixels:,}"
                )
            img.load()  # decode now: a truncated or corrupt file fails here, not later
            return img.convert("RGB")
    except StudioError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise StudioError(f"{label} is not an image Pillow can read") from None


def store_element(image: Image.Image, folder: Path) -> str:
    """Save an accepted image as PNG under its content hash; returns the file name."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    name = hashlib.sha256(data).hexdigest()[:32] + ".png"
    path = Path(folder) / name
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return name
