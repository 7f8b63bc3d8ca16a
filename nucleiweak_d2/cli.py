"""One error guard for every command-line tool of nucleiweak_d2.

A tool's ``main(argv)`` raises on bad input; the guard turns that into one line on stderr and
exit code 2, so a user never sees a traceback for a typo in a path, and a script can tell bad
input (2) from a partial failure that the tool reports itself (1, e.g. images skipped by
``tools/predict.py``) and from a bug (a traceback, exit code 1 from Python)::

    from nucleiweak_d2.cli import run_cli

    if __name__ == "__main__":
        sys.exit(run_cli(main))

or, for a ``main`` that should return the exit code itself::

    @cli_guard
    def main(argv=None):
        ...

Bad input is :class:`UserInputError`, ``ValueError``, ``FileNotFoundError`` or
``FileExistsError``. Any other exception is a bug and propagates with its traceback. With
``--debug`` anywhere on the command line (it is removed before ``main`` sees ``argv``) bad
input re-raises too, for the full traceback.

This module imports only the standard library (no torch, no Detectron2), so tools stay fast
to fail on bad input.
"""

import functools
import sys

__all__ = [
    "UserInputError",
    "USER_ERRORS",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_BAD_INPUT",
    "DEBUG_FLAG",
    "add_debug_flag",
    "error_line",
    "run_cli",
    "cli_guard",
]

EXIT_OK = 0
EXIT_PARTIAL = 1  # the tool ran but some items failed; it listed them itself
EXIT_BAD_INPUT = 2  # same code as argparse's usage errors
DEBUG_FLAG = "--debug"


class UserInputError(ValueError):
    """Bad input from the user (a file, a folder, an option), reported in one line."""


USER_ERRORS = (UserInputError, ValueError, FileNotFoundError, FileExistsError)


def add_debug_flag(parser):
    """Declare ``--debug`` in an argparse parser, so that ``--help`` lists it.

    :func:`run_cli` removes the flag from ``argv`` before calling ``main``, so ``main`` need
    not handle it.
    """
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help="on bad input, show the Python traceback instead of one line",
    )
    return parser


def error_line(exc):
    """The one-line ``error: <message>`` of a bad-input exception (newlines folded)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {message}"


def _split_debug(argv):
    """``(argv without --debug, whether --debug was given)``; None means ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return [a for a in argv if a != DEBUG_FLAG], DEBUG_FLAG in argv


def _exit_code(result):
    """Exit code of a ``main`` return value: an int as is, an ``exit_code`` attribute, else 0."""
    if isinstance(result, bool) or result is None:
        return EXIT_OK
    if isinstance(result, int):
        return result
    return int(getattr(result, "exit_code", EXIT_OK))


def run_cli(main, argv=None):
    """Run ``main(argv)`` and turn bad input into one line on stderr and exit code 2.

    Parameters
    ----------
    main : callable
        ``main(argv) -> int | None | object``; an int is the exit code, an object with an
        ``exit_code`` attribute gives it, anything else means 0.
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``. ``--debug`` is removed
        before ``main`` sees them.

    Returns
    -------
    int
        The exit code: ``main``'s, or 2 after printing ``error: <message>`` on stderr for
        :data:`USER_ERRORS`.

    Raises
    ------
    Exception
        Bad input when ``--debug`` is given; any other exception always.
    """
    argv, debug = _split_debug(argv)
    try:
        return _exit_code(main(argv))
    except USER_ERRORS as exc:
        if debug:
            raise
        print(error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT


def cli_guard(main):
    """Decorator form of :func:`run_cli`: the decorated ``main(argv)`` returns the exit code."""

    @functools.wraps(main)
    def guarded(argv=None):
        return run_cli(main, argv)

    return guarded
