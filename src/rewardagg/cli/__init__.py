"""The ``rewardagg`` command line: ``rewardagg demo`` and ``rewardagg audit FILE``.

Exit codes: 0 success; 2 bad usage, a bad input file or a missing optional dependency;
1 an unexpected error.

Adding a subcommand (for example ``bench``): write a ``configure(parser)`` function that
adds its arguments and a ``run(args) -> int`` function, and append one :class:`Command`
to :data:`COMMANDS`. ``configure`` and ``run`` may be callables or ``"module:function"``
strings; strings are imported only when needed, so ``rewardagg --help`` and the other
commands never import the new command's dependencies.

The package: :mod:`~rewardagg.cli.parser` builds the argument parser (one subparser per
command), :mod:`~rewardagg.cli.commands` runs the commands, and :func:`main` joins them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rewardagg.cli.parser import (
    COMMANDS,
    EXIT_USAGE,
    Command,
    UsageError,
    _resolve,
    build_parser,
)

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rewardagg`` script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage, 0 on --help
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(_resolve(args._run)(args))
    except UsageError as e:
        print(f"rewardagg {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
