"""Errors a user can cause with config or input; the CLI prints them as one line and exits non-zero."""


class ConfigError(ValueError):
    """Bad config or input. The message names the key, file or value, and the fix."""
