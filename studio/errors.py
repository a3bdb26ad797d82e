"""The studio's user-error type, in a module that imports nothing heavy: ``studio --help``
and the CLI's argument checks run without loading torch."""

import re


class StudioError(Exception):
    """A user error: printed as one line, exit code 2."""


# The pipeline's parameter names in its messages → the names every front end of the studio
# uses (CLI --steps, the API's and the UI's "steps").
_PIPELINE_WORDS = {
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "num_frames": "frames",
}


def user_words(message: str) -> str:
    """``message`` with the pipeline's parameter names replaced by the studio's."""
    for name, word in _PIPELINE_WORDS.items():
        message = re.sub(rf"\b{name}\b", word, message)
    return message
