"""The judges of Shapes World videos, as a library (``studio eval`` calls them).

``contract`` is the judge's own copy of ``shapes_world.md`` (palettes, shapes, sizes, motions,
the detector's thresholds, caption parsing); ``detect`` reads objects off pixels for every
judge; ``shapes``, ``elements`` and ``storyboards`` judge single clips, reference elements and
storyboards; ``report`` writes their reports. The held-out suites ship in ``suites/`` as
package data. Nothing here imports ``world``, ``train`` or ``studio``: the judge knows only the
contract, and ``tests/test_evals_contract.py`` checks that it agrees with the renderer.
"""

from importlib.resources import files
from pathlib import Path

#: The shipped suites, found with ``importlib.resources`` so an installed package finds them.
SUITES_DIR = Path(str(files(__name__) / "suites"))
