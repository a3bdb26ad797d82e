"""Where sprites can start: a layout of given sprites and motions that the world allows.

Used by the elements suite builder (``train/elements_suite.py``) to keep only entries that
fit, and by the ground-truth run of ``studio eval elements --ground-truth``
(``studio/elements_batch.py``) to render them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .shapes_world import ClipSpec, ObjectSpec, box_side, layout_ok, trajectory


def place_sprites(
    references: list[dict[str, Any]],
    motions: list[str],
    background: str,
    rng: np.random.Generator,
    frames: int = 16,
    canvas: int = 64,
    attempts: int = 200,
) -> ClipSpec | None:
    """A :class:`~world.shapes_world.ClipSpec` showing ``references`` (sprite specs
    ``{"shape", "pattern", "color", "color2", "size"}``) with ``motions`` that the world
    allows (every sprite inside the canvas at every frame, S/32 px between two), or None when
    ``attempts`` random integer starts all fail."""
    objects = [
        ObjectSpec(
            shape=r["shape"],
            color=r["color"],
            size=r["size"],
            motion=m,
            x=0.0,
            y=0.0,
            pattern=r["pattern"],
            color2=r["color2"],
        )
        for r, m in zip(references, motions, strict=True)
    ]
    offsets = trajectory(ClipSpec(objects, background, frames, canvas))  # starts at (0, 0)
    for _ in range(attempts):
        for i, obj in enumerate(objects):
            low = np.ceil(-offsets[:, i].min(axis=0))
            high = np.floor(canvas - box_side(obj.size, canvas) - offsets[:, i].max(axis=0))
            if (low > high).any():
                return None  # this size and motion cannot fit the clip at all
            obj.x = float(rng.integers(low[0], high[0] + 1))
            obj.y = float(rng.integers(low[1], high[1] + 1))
        spec = ClipSpec(objects, background, frames, canvas)
        if layout_ok(spec):
            return spec
    return None
