"""The project's two error types, and a ``main`` wrapper that turns them into a clean exit.

Exit statuses of every command (``cli_main``): 0 done; 2 bad input (``InputError``, including a file system
that refuses a write, ``rankiqa.fsutil.StorageError``); 3 training failed on good input (``TrainingError``:
the loss diverged, a GPU process failed); 130 interrupted (Ctrl-C; a training run snapshots first).
"""

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


class TrainingError(Exception):
    """Training failed although its input was accepted: the loss diverged, or a GPU process failed.

    ``str(err)`` reads like an ``InputError``'s (``path: message``; the path is the run's solver or log).
    """

    def __init__(self, message: str, path: str | PathLike | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        super().__init__(str(self))

    def __reduce__(self):  # keep the path through pickling (GPU processes)
        return (type(self), (self.message, self.path))

    def __str__(self) -> str:
        return self.message if self.path is None else f"{self.path}: {self.message}"


#: Exit status of a command stopped by an ``InputError`` / a ``TrainingError`` (module docstring).
EXIT_INPUT_ERROR = 2
EXIT_TRAINING_ERROR = 3


def exit_status(err: InputError | TrainingError) -> int:
    """The exit status a command ends with after ``err``."""
    return EXIT_TRAINING_ERROR if isinstance(err, TrainingError) else EXIT_INPUT_ERROR


def cli_main(func: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command-line ``main``: an ``InputError`` prints ``error: ...`` and exits 2; so does an
    ``OSError`` of a full or read-only file system that no writer turned into ``rankiqa.fsutil.StorageError``
    (it names the file when the error does); a ``TrainingError`` prints the same way and exits 3."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = func(*args, **kwargs)
        except (InputError, TrainingError) as err:
            print(f"error: {err}", file=sys.stderr)
            return exit_status(err)
        except OSError as err:
            from rankiqa.fsutil import storage_error  # fsutil imports this module

            converted = storage_error(err)
            if converted is None:
                raise
            print(f"error: {converted}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        except KeyboardInterrupt:
            # Every command keeps what it finished and nothing half-written (a training run: its last
            # snapshot; an evaluation: nothing), so the same command again goes on from there.
            print("interrupted: run the same command again to go on from what was finished", file=sys.stderr)
            return 130
        return 0 if code is None else int(code)

    return wrapper
