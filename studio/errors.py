"""The studio's user-error type, in a module that imports nothing heavy: ``studio --help``
and the CLI's argument checks run without loading torch."""


class StudioError(Exception):
    """A user error: printed as one line, exit code 2."""
