"""Log messages of the command line: compilation warnings are logged, not printed.

The numba kernel warns (:class:`rewardagg.kernels.CompileWarning`) when its first call
spends more than a second compiling, and numba's own warnings name source lines; neither
is something the user of ``rewardagg demo`` or ``rewardagg audit`` can act on, so the
command line turns them into records of the ``rewardagg.cli`` logger
(:func:`compile_warnings_logged`), shown with ``rewardagg -v`` (:func:`configure_logging`)
together with the library's other log messages. Other warnings are printed as usual.
Worker processes started by ``fork`` (the demo's) inherit both settings.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["compile_warnings_logged", "configure_logging", "is_compile_warning"]

log = logging.getLogger("rewardagg.cli")


def is_compile_warning(category: type[Warning]) -> bool:
    """Whether ``category`` is about compilation: rewardagg's ``CompileWarning`` or a
    warning of numba (whose modules are never imported here to find out)."""
    kernels = sys.modules.get("rewardagg.kernels")
    compile_warning = getattr(kernels, "CompileWarning", None)
    if compile_warning is not None and issubclass(category, compile_warning):
        return True
    return category.__module__.split(".")[0] == "numba"


@contextlib.contextmanager
def compile_warnings_logged() -> Iterator[None]:
    """Within the block, compilation warnings (:func:`is_compile_warning`) are logged at
    INFO level on the ``rewardagg.cli`` logger instead of printed; the others are shown as
    before. The previous warning settings come back at the end."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> Any:
            if is_compile_warning(category):
                log.info("%s: %s", category.__name__, message)
                return None
            return shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def configure_logging(verbose: bool) -> None:
    """``verbose``: show the ``rewardagg`` loggers' INFO messages on stderr (once, however
    often it is called); otherwise leave logging as it is (no message below WARNING shows)."""
    if not verbose:
        return
    root = logging.getLogger("rewardagg")
    if not any(getattr(h, "_rewardagg_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rewardagg: %(name)s: %(message)s"))
        handler._rewardagg_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)
