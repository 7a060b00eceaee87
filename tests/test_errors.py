"""rankiqa.errors: bad input exits 2, failed training 3, Ctrl-C 130; messages name the file (and line) as
editors jump to them; a command's own status passes through and other errors keep their traceback (the
full-disk case is in ``tests/test_fsutil.py``)."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from rankiqa.errors import EXIT_INPUT_ERROR, EXIT_TRAINING_ERROR, InputError, TrainingError, cli_main


def _command(error: BaseException):
    @cli_main
    def main() -> int:
        raise error

    return main


def test_exit_statuses_and_messages(capsys):
    assert (EXIT_INPUT_ERROR, EXIT_TRAINING_ERROR) == (2, 3)
    assert _command(InputError("bad value", "a.txt", 4))() == 2
    assert capsys.readouterr().err == "error: a.txt:4: bad value\n"
    assert _command(TrainingError("the loss is nan at iteration 7", "runs/x/solver.prototxt"))() == 3
    assert capsys.readouterr().err == "error: runs/x/solver.prototxt: the loss is nan at iteration 7\n"
    assert _command(KeyboardInterrupt())() == 130
    assert "run the same command again to go on from what was finished" in capsys.readouterr().err


def test_a_training_error_is_no_input_error_and_survives_pickling():
    err = TrainingError("multi-GPU training failed in process 1 (GPU 3)")
    assert not isinstance(err, InputError)
    copy = pickle.loads(pickle.dumps(TrainingError("diverged", "s.prototxt")))
    assert (copy.message, copy.path, str(copy)) == ("diverged", "s.prototxt", "s.prototxt: diverged")


@pytest.mark.parametrize(("args", "text"), [
    (("bad value", Path("lists/train.txt"), 12), "lists/train.txt:12: bad value"),
    (("bad value", "lists/train.txt"), "lists/train.txt: bad value"),
    (("bad value",), "bad value"),
    (("bad value", None, 3), "bad value"),  # a line without a file names nothing
])
def test_the_message_names_file_and_line_as_editors_jump_to_them(args: tuple, text: str) -> None:
    err = InputError(*args)
    assert str(err) == text and err.message == "bad value"
    assert err.path == (None if len(args) < 2 or args[1] is None else str(args[1]))


def test_a_commands_own_status_passes_through() -> None:
    @cli_main
    def main(code: int | None = None) -> int | None:
        return code

    assert main() == 0 and main(3) == 3 and main.__name__ == "main"


@pytest.mark.parametrize("error", [OSError(errno.ENOENT, "No such file", "x.txt"), RuntimeError("a bug")])
def test_other_errors_go_through_with_their_traceback(error: Exception) -> None:
    with pytest.raises(type(error)):
        _command(error)()
