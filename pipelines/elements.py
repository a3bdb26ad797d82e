"""Reference elements (elements-to-video): the prompt's placeholders and the reference images.

A prompt binds text to reference images with placeholders ``<ref1>``, ``<ref2>``, ``<ref3>``
(SkyReels-A2's elements-to-video): ``<refK>`` is the K-th image given. A reference image is,
in the Shapes World contract, the sprite alone centred on a white (240, 240, 240) square;
:func:`prepare_reference` brings whatever a user has (any size, aspect, mode, alpha) to
that form.

No torch here: the studio checks a request with these before any model loads, and the
pipeline calls the same functions, so both give the same errors. Both are idempotent on
what they return (a prepared reference prepares to itself).
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

MAX_REFERENCES = 3
# a non-square reference whose padded square would be larger is shrunk before padding
MAX_PADDED_PIXELS = 4096 * 4096
REFERENCE_BACKGROUND = (240, 240, 240)
REFERENCE_SIZE = 64

# ``<refN>``, N from 1: the one definition, used by the tokeniser binding and the studio
REF_PLACEHOLDER = re.compile(r"<ref([1-9][0-9]*)>")
# Anything a user may have meant as a placeholder: "<", optional spaces, "ref" in any case,
# then up to a few characters to the next ">" (or none, for an unclosed one). Each must be
# exactly ``<refN>``; the rest are refused rather than left in the prompt as plain words.
_PLACEHOLDER_LIKE = re.compile(r"<\s*ref[^<>]{0,8}>?", re.IGNORECASE)
_GRAY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


# ---------------------------------------------------------------------------- placeholders
def placeholders(prompt: str) -> list[int]:
    """The N of every ``<refN>`` in ``prompt``, sorted, each once.

    Placeholders are written exactly ``<ref1>``, ``<ref2>``, … (lower case, no spaces,
    counting from 1). Anything else that starts like one (``<ref0>``, ``<ref 1>``,
    ``<REF1>``, ``<ref01>``, ``<ref>``, an unclosed ``<ref1``) raises ``ValueError``: the
    text encoder would read it as plain words and the reference would silently go unused.
    """
    for match in _PLACEHOLDER_LIKE.finditer(prompt):
        text = match.group(0)
        if not REF_PLACEHOLDER.fullmatch(text):
            raise ValueError(
                f"malformed placeholder {text.strip()!r} in the prompt: write <ref1>, <ref2> "
                "or <ref3> (lower case, no spaces, counting from 1)"
            )
    return sorted({int(n) for n in REF_PLACEHOLDER.findall(prompt)})


def check_placeholders(prompt: str, n_references: int) -> None:
    """Check that ``prompt`` uses exactly ``<ref1>`` … ``<refN>`` for ``N = n_references``.

    Raises ``ValueError`` with a one-line message for: more than :data:`MAX_REFERENCES`
    references, a malformed placeholder (see :func:`placeholders`), a placeholder with no
    image, or an image with no placeholder. ``n_references = 0`` with no placeholder is a
    plain text prompt and passes.
    """
    if n_references < 0:
        raise ValueError(f"the number of reference images must be >= 0, got {n_references}")
    if n_references > MAX_REFERENCES:
        raise ValueError(f"{n_references} reference images were given; at most {MAX_REFERENCES}")
    used = placeholders(prompt)
    for k in used:
        if k > n_references:
            given = (
                "no reference image was given"
                if n_references == 0
                else f"only {n_references} reference image{'s were' if n_references > 1 else ' was'} given"
            )
            limit = f" (at most {MAX_REFERENCES} references)" if k > MAX_REFERENCES else ""
            raise ValueError(f"the prompt uses <ref{k}> but {given}{limit}")
    for k in range(1, n_references + 1):
        if k not in used:
            raise ValueError(
                f"reference image {k} is given but the prompt has no <ref{k}> "
                f"(write <ref{k}> where that element goes)"
            )


# ---------------------------------------------------------------------------- images
def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any image as ``(H, W, 3)`` uint8 RGB, at its own size.

    PIL: every mode. Grayscale (``1``, ``L``, ``I;16``, ``I``, ``F``) is repeated over the
    three channels (16-bit scaled by 1/257; ``I`` read as 8-bit when it fits in 0..255, else
    as 16-bit, which is how 16-bit PNGs open; ``F`` read as 0..1 when it fits, else 0..255);
    palette, CMYK, YCbCr, … through Pillow's conversion. Transparency (``LA``, ``RGBA``,
    ``RGBa``, ``PA``, a palette's transparent index) is alpha-composited over
    :data:`REFERENCE_BACKGROUND`, the colour around a sprite in a reference image, never
    over black.

    numpy: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (RGBA), channels last;
    uint8 (or any integer dtype within 0..255), uint16 (0..65535), bool, or float in [0, 1].
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"a reference image must be a PIL image or a numpy array, got {type(image).__name__}"
        )
    arr = image
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"a reference image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
            f"got shape {tuple(image.shape)}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the reference image is empty (shape {tuple(image.shape)})")
    if arr.dtype == np.uint8 and arr.shape[2] != 4:
        return np.ascontiguousarray(np.repeat(arr, 3 // arr.shape[2], axis=2))  # a copy
    values = _unit_float(arr)  # (H, W, C) float64 in [0, 1]
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    if values.shape[2] == 4:
        return _composite(values[:, :, :3], values[:, :, 3:])
    return _to_uint8(values)


def prepare_reference(image: Image.Image | np.ndarray, size: int = REFERENCE_SIZE) -> np.ndarray:
    """A reference image as the model takes it: ``(size, size, 3)`` uint8 RGB.

    1. Colour: :func:`to_rgb` (alpha composited over :data:`REFERENCE_BACKGROUND`).
    2. Square: a non-square image is padded with :data:`REFERENCE_BACKGROUND` to a square,
       the image centred (an odd leftover pixel goes to the bottom / right), so the sprite
       keeps its aspect ratio and stays centred, as in the contract; one whose square would
       exceed :data:`MAX_PADDED_PIXELS` is shrunk (as in 3) before it is padded.
    3. Size: shrinking averages the source pixels each output pixel covers (Pillow's
       ``BOX`` filter, i.e. area averaging), so stripes thinner than a pixel become their
       mean colour instead of aliasing to one of them; enlarging repeats pixels (nearest),
       which keeps a sprite's colours pure and, for an integer factor, is exact.

    Already-prepared input (``(size, size, 3)`` uint8) comes back unchanged (a copy).
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"the reference size must be a positive integer, got {size!r}")
    rgb = to_rgb(image)  # (H, W, 3) uint8
    h, w = rgb.shape[:2]
    side = max(h, w)
    if h != w and side > size and side * side > MAX_PADDED_PIXELS:
        # shrink first, then pad: padding a 100 000 × 1 strip to its square would take
        # 30 GB (Pillow's pixel cap counts the image, not the square); below the cap the
        # square is padded first, as always (pixel-exact with earlier sidecars' frames)
        h, w = max(1, round(h * size / side)), max(1, round(w * size / side))
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BOX), dtype=np.uint8)
        side = size
    if h != w:
        square = np.empty((side, side, 3), np.uint8)
        square[:] = REFERENCE_BACKGROUND
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = rgb
        rgb = square
    if side == size:
        return rgb.copy()
    if size % side == 0:  # exact integer enlargement
        factor = size // side
        return np.ascontiguousarray(rgb.repeat(factor, axis=0).repeat(factor, axis=1))
    resample = Image.BOX if side > size else Image.NEAREST
    return np.asarray(Image.fromarray(rgb).resize((size, size), resample), dtype=np.uint8).copy()


# ---------------------------------------------------------------------------- helpers
def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"the reference image is empty ({image.width}×{image.height})")
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("1", "L"):
        return np.repeat(np.asarray(image.convert("L"), dtype=np.uint8)[:, :, None], 3, axis=2)
    if mode in _GRAY_16BIT_MODES:
        return to_rgb(np.asarray(image).astype(np.uint16))
    if mode == "I":
        arr = np.asarray(image).astype(np.int64)
        if arr.size and arr.min() >= 0 and arr.max() <= 255:
            return to_rgb(arr.astype(np.uint8))
        return to_rgb(np.clip(arr, 0, 65535).astype(np.uint16))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 1.0 if arr.size and arr.min() >= 0 and arr.max() <= 1 else 255.0
        return to_rgb(np.clip(arr / scale, 0.0, 1.0))
    has_alpha = mode in ("LA", "La", "RGBA", "RGBa", "PA") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        return to_rgb(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()  # P, CMYK, YCbCr, LAB, HSV


def _unit_float(arr: np.ndarray) -> np.ndarray:
    """Pixel values as float64 in [0, 1]; ValueError for what cannot be read as pixels."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(
                f"integer reference pixels must lie in 0..255 (or be uint16), got "
                f"{arr.min()}..{arr.max()} ({arr.dtype})"
            )
        return arr.astype(np.float64) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("the reference image has NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"float reference pixels must lie in [0, 1], got {lo:.4g}..{hi:.4g}")
        return np.clip(arr.astype(np.float64), 0.0, 1.0)
    raise ValueError(f"reference image pixels must be numbers, got dtype {arr.dtype}")


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3) over :data:`REFERENCE_BACKGROUND` with ``alpha`` (H, W, 1), all in
    [0, 1] (straight, not premultiplied, alpha) → uint8."""
    background = np.asarray(REFERENCE_BACKGROUND, np.float64) / 255.0
    return _to_uint8(rgb * alpha + background * (1.0 - alpha))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
