"""One error type for bad user input, and a ``main`` wrapper that turns it into a clean exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from os import PathLike


class InputError(Exception):
    """Bad input from the user: names the file (and line) at fault.

    ``str(err)`` reads ``path:line: message`` (or ``path: message``) so that a user can jump to it.
    """

    def __init__(self, message: str, path: str | PathLike | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __reduce__(self):  # keep path and line through pickling (worker processes of a pool)
        return (type(self), (self.message, self.path, self.line))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return where + self.message


def cli_main(func: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command-line ``main``: an ``InputError`` prints ``error: ...`` and exits 2; so does an
    ``OSError`` of a full or read-only file system that no writer turned into ``rankiqa.fsutil.StorageError``
    (it names the file when the error does)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = func(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            from rankiqa.fsutil import storage_error  # fsutil imports this module

            converted = storage_error(err)
            if converted is None:
                raise
            print(f"error: {converted}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: run the same command again to resume", file=sys.stderr)
            return 130
        return 0 if code is None else int(code)

    return wrapper
