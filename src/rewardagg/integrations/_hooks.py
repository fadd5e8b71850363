"""Run an adapter's ``install()`` in a process as soon as its host module is imported.

Used by the verl and OpenRLHF adapters' Ray ``worker_process_setup_hook``: a worker that
never imports the host's trainer module pays nothing, and this module imports neither a
host nor torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attribute", "run_after_import"]


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``trigger`` through the other finders and runs ``action`` once it has loaded."""

    def __init__(self, trigger: str, action: Callable[[], None]) -> None:
        self.trigger = trigger
        self.action = action
        self._searching = False  # another hook on the same trigger asks every finder too

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.trigger or self._searching:
            return None
        self._searching = True
        try:
            spec = self._find_elsewhere(fullname, path, target)
        finally:
            self._searching = False
        if spec is None:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        hook = self

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec_):
                return loader.create_module(spec_)

            def exec_module(self, module):
                loader.exec_module(module)
                sys.modules[fullname] = module
                if hook in sys.meta_path:
                    sys.meta_path.remove(hook)
                hook.action()

        spec.loader = _Loader()
        return spec

    def _find_elsewhere(self, fullname, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


def run_after_import(trigger: str, action: Callable[[], None]) -> None:
    """Call ``action()`` now if module ``trigger`` is imported, else right after it is.

    A module that is still importing counts as imported (it is in ``sys.modules``): an
    action that needs its definitions must check for them, and be registered again by a
    hook on a module that finishes later. The same ``(trigger, action)`` pair is
    registered once.
    """
    if trigger in sys.modules:
        action()
        return
    if not any(
        isinstance(f, _AfterImport) and f.trigger == trigger and f.action == action
        for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _AfterImport(trigger, action))


def lazy_attribute(package: str, names: frozenset[str], name: str) -> Any:
    """Module ``__getattr__`` body: ``name`` from ``<package>._adapter``, imported on use."""
    if name in names or (name.startswith("_") and not name.startswith("__")):
        adapter = importlib.import_module(f"{package}._adapter")
        try:
            return getattr(adapter, name)
        except AttributeError:
            pass
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
