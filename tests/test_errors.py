"""rankiqa.errors: bad input exits 2, failed training 3, Ctrl-C 130; messages name the file."""

from __future__ import annotations

import pickle

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


def test_a_training_error_is_no_input_error_and_survives_pickling():
    err = TrainingError("multi-GPU training failed in process 1 (GPU 3)")
    assert not isinstance(err, InputError)
    copy = pickle.loads(pickle.dumps(TrainingError("diverged", "s.prototxt")))
    assert (copy.message, copy.path, str(copy)) == ("diverged", "s.prototxt", "s.prototxt: diverged")
