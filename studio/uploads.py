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
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipelines.elements import to_rgb

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


def check_image(
    data: bytes, limits: UploadLimits, name: str = "upload", mode: str | None = "RGB"
) -> Image.Image:
    """The decoded image converted to ``mode``, or StudioError saying what is wrong with
    ``data``.

    mode: ``None`` returns the image in the mode it was decoded in (alpha, 16-bit gray,
        palette kept), for callers that handle those themselves: reference elements go
        through ``pipelines.elements.prepare_reference``, which composites transparency over
        the reference background instead of turning it black as ``convert("RGB")`` does.
    """
    label = os.path.basename(str(name))[:80] or "upload"
    if len(data) == 0:
        raise StudioError(f"{label} is empty")
    if len(data) > limits.max_bytes:
        raise StudioError(
            f"{label} is {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB"
        )
    try:
        with warnings.catch_warnings():
            # between Pillow's warning and error sizes our own pixel check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
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
            return img.copy() if mode is None else img.convert(mode)  # outlives the file
    except StudioError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap, far above ours, hit in open()
        raise StudioError(
            f"{label} declares more pixels than the studio will open (a possible decompression "
            f"bomb); the limit is {limits.max_pixels:,} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise StudioError(
            f"{label} is not an image the studio can open: use a PNG, JPEG, WebP or BMP file"
        ) from None


def read_image_file(path: str | Path, limits: UploadLimits, what: str = "image") -> bytes:
    """The bytes of the image file ``path`` (a user's path: the CLI's), checked for being a
    file within ``limits.max_bytes`` before it is read; StudioError otherwise. What the
    bytes hold is for :func:`check_image` to say."""
    path = Path(path)
    if not path.exists():
        raise StudioError(f"{what} not found: {path}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise StudioError(f"{what} is {kind}, not an image: {path}")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise StudioError(
            f"{what} is {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB: {path}"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StudioError(f"cannot read {what} {path}: {exc.strerror}") from None


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


def accept_element(data: bytes, limits: UploadLimits, name: str, folder: Path) -> str:
    """Check an uploaded reference element and store it (:func:`store_element`) as RGB, its
    transparency composited over the reference background (a sprite cut out on a
    transparent canvas is then on white, as the model's references are, not on black)."""
    image = check_image(data, limits, name, mode=None)
    try:
        rgb = to_rgb(image)
    except ValueError as exc:
        raise StudioError(f"{os.path.basename(str(name))[:80]}: {exc}") from None
    return store_element(Image.fromarray(rgb), folder)
