"""Shapes World: the procedural domain of the default model (``docs/shapes_world.md``).

The renderer, its captions and their vocabulary, the WordNet phrasing table (with its
licence), reference sprites and counterfactual captions: one source of truth, used by
``train/`` to make data and by the judge's contract test in ``evals/``.
"""
