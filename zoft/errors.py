"""The base of every error zoft raises on purpose: its message names the problem and the fix."""


class ZoftError(Exception):
    """A user-facing error; the CLI prints its message without a traceback."""


class RunConfigError(ZoftError):
    """A run-level setting that cannot work (bad sizes, a reused output_dir)."""
