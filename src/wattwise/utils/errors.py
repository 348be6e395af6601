"""Config errors: reported in one or two lines and a non-zero exit, before any training."""

from __future__ import annotations

import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and the fix."""


def require_int(key: str, value: object, minimum: int, allow_none: bool = False) -> None:
    """A setting that must be a whole number >= `minimum` (bools refused): ConfigError naming `key`."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        also = " or null" if allow_none else ""
        raise ConfigError(f"{key} must be an integer >= {minimum}{also}, got {value!r}")


def exit_with_error(message: str, code: int = 2) -> NoReturn:
    print(f"wattwise: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def root_cause(err: BaseException) -> BaseException:
    """The innermost cause, e.g. the ValueError inside Hydra's InstantiationException."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


class OutputError(OSError):
    """An output (checkpoint, summary) could not be written; the message names the path and why.

    Reported in one line with exit code 1, like a ConfigError, because its cause is the disk or
    the folder's permissions, not the code: a traceback would only hide the path.
    """
