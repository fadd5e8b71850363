"""The ``rewardagg`` command line: ``rewardagg demo``, ``rewardagg audit FILE`` and
``rewardagg doctor`` (:mod:`~rewardagg.cli.doctor`).

Exit codes: 0 success; 2 bad usage, a bad input file or a missing optional dependency;
1 an unexpected error.

Adding a subcommand (for example ``bench``): write a ``configure(parser)`` function that
adds its arguments and a ``run(args) -> int`` function, and append one :class:`Command`
to :data:`COMMANDS`. ``configure`` and ``run`` may be callables or ``"module:function"``
strings; strings are imported only when needed, so ``rewardagg --help`` and the other
commands never import the new command's dependencies.

The package: :mod:`~rewardagg.cli.parser` builds the argument parser (one subparser per
command), :mod:`~rewardagg.cli.commands` runs the commands, :mod:`~rewardagg.cli.logs`
logs compilation warnings instead of printing them (``-v`` shows them),
:mod:`~rewardagg.cli.version` writes ``--version``, and :func:`main` joins them. The
reference of every option, generated from these parsers, is ``docs/cli.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from rewardagg.cli.logs import compile_warnings_logged, configure_logging
from rewardagg.cli.parser import (
    COMMANDS,
    EXIT_ERROR,
    EXIT_USAGE,
    Command,
    UsageError,
    _resolve,
    build_parser,
)

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rewardagg`` script; returns the exit code.

    A closed stdout (``rewardagg --version | head -1``) ends the command quietly: no
    ``BrokenPipeError`` traceback, neither from a ``print`` nor from Python's final flush."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:  # stdout's reader went away (`rewardagg audit ... | head`)
        _silence_stdout()
        return EXIT_ERROR
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage, 0 on --help
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    configure_logging(args.verbose)
    try:
        with compile_warnings_logged():
            return int(_resolve(args._run)(args))
    except UsageError as e:
        print(f"rewardagg {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at the null device, so that Python's final flush of the closed pipe
    does not print a second traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured)
        pass
