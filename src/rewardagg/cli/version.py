"""``rewardagg --version``: the version, then one line per optional backend.

The backends are looked up without being imported (``importlib``'s finder and the
installed distribution's metadata), so ``--version`` stays instant and never starts
CUDA or compiles anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

from rewardagg._version import __version__

__all__ = ["BACKENDS", "backend_line", "version_report"]

BACKENDS = (
    ("numba", "fast", 'backend "numba": the fused CPU kernel', "the array path on CPU"),
    (
        "triton",
        "triton",
        'backend "triton": the fused kernel for CUDA tensors',
        "torch ops on CUDA tensors",
    ),
    ("torch", "torch", 'torch tensors in and out; backend "torch"', "numpy arrays only"),
)
"""``(module, extra that installs it, what it gives, what runs without it)`` of each
optional backend."""


def _installed_version(module: str) -> str | None:
    """The version of the installed ``module`` (``"?"`` without metadata), ``None`` when
    it cannot be imported from here."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def backend_line(module: str, extra: str, gives: str, without: str) -> str:
    """``numba 0.68.1: found (backend "numba": ...)`` or ``numba: not found (...)``."""
    found = _installed_version(module)
    if found is None:
        return f'{module}: not found (the "{extra}" extra installs it; without it: {without})'
    return f"{module} {found}: found ({gives})"


def version_report() -> str:
    """What ``rewardagg --version`` prints."""
    head = f"rewardagg {__version__} (Python {platform.python_version()})"
    return "\n".join([head, *(backend_line(*b) for b in BACKENDS)])
