"""Errors that reach the user, and how entry points run from a shell report them: one line
that names the problem and its fix (offrl's own raise statements write those lines), exit
status 2, no traceback. Errors raised outside offrl's code (jax, numpy, a bug) keep their
traceback. Kept free of jax so that `offrl datasets ...` starts fast."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from offrl.data.errors import DatasetError


class TrainingDiverged(RuntimeError):
    """NaN/inf in the state, or a metric beyond the divergence threshold."""


class StopRequested(KeyboardInterrupt):
    """SIGTERM or a first Ctrl-C stopped a run after checkpointing its current chunk; args are
    (message, signal number). Handled like an interrupt (where to resume is printed), with the
    exit status of a process that signal ended."""

    @property
    def exit_status(self) -> int:
        return 128 + int(self.args[1])


def interrupt_exit_status(interrupt: KeyboardInterrupt) -> int:
    return interrupt.exit_status if isinstance(interrupt, StopRequested) else 130  # 130: SIGINT's


USER_ERRORS = (DatasetError, ValueError, FileNotFoundError, FileExistsError, ConnectionError, TrainingDiverged)
# offrl and its algorithms (which live apart in a repository checkout)
OFFRL_CODE = (Path(__file__).resolve().parents[1], Path(importlib.util.find_spec("offrl.algorithms").origin).resolve().parent)


def raised_by_offrl(error: BaseException) -> bool:
    """Whether the innermost frame of the error's traceback is offrl's own code, or the
    algorithm script being run (a user's algorithm file checks its settings as offrl's do)."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    raised_in = Path(traceback.tb_frame.f_code.co_filename).resolve()
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    return any(raised_in.is_relative_to(directory) for directory in OFFRL_CODE) or (
        script is not None and raised_in == Path(script).resolve())


@contextlib.contextmanager
def user_errors_as_messages(enabled: bool = True):
    """Turn a user error raised by offrl inside the block into `error: ...` on stderr and
    exit status 2, and Ctrl-C into exit status 130 without a traceback. Disabled (a caller
    passed argv from Python), everything raises as usual."""
    try:
        yield
    except KeyboardInterrupt as interrupt:  # a user's Ctrl-C: training printed where the run can continue from
        if not enabled:
            raise
        raise SystemExit(interrupt_exit_status(interrupt)) from None
    except USER_ERRORS as error:
        if not enabled or not raised_by_offrl(error):
            raise
        print_error(error)
        raise SystemExit(2) from None


def print_error(error: BaseException) -> None:
    # escaped: messages quote ids and lists in square brackets, which rich would read as markup
    Console(stderr=True).print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
