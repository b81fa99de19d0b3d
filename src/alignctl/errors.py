"""Errors that the CLI turns into a one-line message and exit code 2."""


class InputError(Exception):
    """Bad user input: a missing file, a malformed checkpoint, an unknown name...

    The message is shown to the user as is, on one line, without a traceback.
    """


class GateFailed(Exception):
    """A CI gate or check failed (exit code 1)."""
