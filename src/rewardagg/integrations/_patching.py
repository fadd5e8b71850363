"""Wrap a host's function everywhere it is bound, and a host class's method, reversibly.

A function defined in one module is often imported by name into others (``from
verl.trainer.ppo.ray_trainer import compute_advantage``); replacing it in its home module
does not reach the copies made before. :func:`wrap_function` therefore replaces every
binding of the original in every loaded module (found by identity, so nothing else is
touched), and :func:`unwrapped_bindings` says where the original is still in place, so an
adapter's ``is_installed()`` can be truthful. A module imported afterwards copies the
wrapper from the home module.

A wrapper carries ``__wrapped__`` (the original) and ``__rewardagg_wrapper__ = True``;
one wrapper object is made per original and shared by all its bindings.

This module imports neither torch nor a host.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

__all__ = [
    "is_wrapper",
    "loaded",
    "mark_wrapper",
    "method_is_wrapped",
    "unwrap_function",
    "unwrap_method",
    "unwrapped_bindings",
    "wrap_function",
    "wrap_method",
]

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def is_wrapper(obj: Any) -> bool:
    """Whether ``obj`` is a rewardagg wrapper."""
    return bool(getattr(obj, "__rewardagg_wrapper__", False))


def _original(obj: Any) -> Any:
    """What a wrapper wraps; ``obj`` itself when it is not a rewardagg wrapper."""
    return obj.__wrapped__ if is_wrapper(obj) else obj


def mark_wrapper(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``wrapper`` the original's name and docstring, ``__wrapped__`` and the mark."""
    functools.update_wrapper(wrapper, original, updated=())
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    wrapper.__rewardagg_wrapper__ = True  # type: ignore[attr-defined]
    return wrapper


def loaded(module_name: str, attr: str) -> Any:
    """``module_name.attr`` if the module is imported and has finished defining ``attr``
    (``None`` otherwise, e.g. while the module is still importing)."""
    module = sys.modules.get(module_name)
    return None if module is None else _namespace(module).get(attr)


def _namespace(module: Any) -> dict[str, Any]:
    namespace = getattr(module, "__dict__", None)
    return namespace if isinstance(namespace, dict) else {}


def _modules() -> Iterator[ModuleType]:
    for module in list(sys.modules.values()):
        if isinstance(module, ModuleType):
            yield module


def _bindings(attr: str, value: Any) -> list[ModuleType]:
    """Every loaded module whose global ``attr`` is ``value`` (by identity)."""
    return [m for m in _modules() if _namespace(m).get(attr) is value]


def wrap_function(module_name: str, attr: str, wrap: Wrap, cache: dict[Any, Any]) -> int:
    """Replace ``module_name.attr`` and every copy of it in loaded modules by its wrapper.

    Args:
        module_name: the module that defines the function.
        attr: the function's name (the copies are bound under the same name).
        wrap: ``wrap(original) -> wrapper``; called once per original.
        cache: original -> wrapper, kept by the caller (one wrapper per original).

    Returns:
        How many bindings were replaced (0 when the module is not loaded yet).
    """
    current = loaded(module_name, attr)
    if current is None:
        return 0
    original = _original(current)
    wrapper = cache.get(original)
    if wrapper is None:
        wrapper = cache[original] = mark_wrapper(wrap(original), original)
    targets = _bindings(attr, original)
    for module in targets:
        setattr(module, attr, wrapper)
    return len(targets)


def unwrap_function(attr: str) -> int:
    """Put the original back wherever a rewardagg wrapper is bound as ``attr``."""
    count = 0
    for module in _modules():
        current = _namespace(module).get(attr)
        if is_wrapper(current):
            setattr(module, attr, _original(current))
            count += 1
    return count


def unwrapped_bindings(module_name: str, attr: str) -> list[str]:
    """Where the original ``module_name.attr`` is still bound unwrapped (``"module.attr"``
    names; empty when the module is not loaded or everything is wrapped)."""
    current = loaded(module_name, attr)
    if current is None:
        return []
    return [f"{m.__name__}.{attr}" for m in _bindings(attr, _original(current))]


def wrap_method(module_name: str, class_name: str, attr: str, wrap: Wrap) -> bool:
    """Replace method ``attr`` defined on ``module_name.class_name`` by its wrapper (not
    an inherited one); ``False`` when the class or method is not there (yet)."""
    cls = loaded(module_name, class_name)
    current = None if cls is None else cls.__dict__.get(attr)
    if current is None:
        return False
    if not is_wrapper(current):
        setattr(cls, attr, mark_wrapper(wrap(current), current))
    return True


def unwrap_method(module_name: str, class_name: str, attr: str) -> None:
    """Undo :func:`wrap_method`."""
    cls = loaded(module_name, class_name)
    current = None if cls is None else cls.__dict__.get(attr)
    if is_wrapper(current):
        setattr(cls, attr, _original(current))


def method_is_wrapped(module_name: str, class_name: str, attr: str) -> bool | None:
    """``None`` when the class is not loaded, else whether its ``attr`` is wrapped."""
    cls = loaded(module_name, class_name)
    if cls is None:
        return None
    return is_wrapper(cls.__dict__.get(attr))
