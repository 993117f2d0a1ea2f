"""The base of every error zoft raises on purpose: its message names the problem and the fix."""


class ZoftError(Exception):
    """A user-facing error; the CLI prints its message without a traceback."""
