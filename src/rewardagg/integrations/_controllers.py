"""The run's controller in every adapter (TRL, verl, OpenRLHF): adaptive weights, a
constraint tracker, or both, through one code path.

A host reads its settings into :class:`AdaptiveOptions` (:func:`parse_adaptive`) and the
shared :class:`~rewardagg.integrations._settings.ConstraintOptions`;
:func:`build_controller` makes the one controller of the run (``None``, a
:class:`rewardagg.AdaptiveWeights`, a :class:`rewardagg.ConstraintTracker`, or
:func:`rewardagg.combine` of both). Each batch, the host passes
``controlled_kwargs(kwargs, controller.advantage_kwargs())`` to :func:`rewardagg.advantages`,
then ``controller.update(rewards)`` and logs ``controller.metrics()``
(``rewardagg/weight/<reward>``, ``rewardagg/trusted/<reward>``, ``rewardagg/lambda/<reward>``,
...). :func:`save_controller` / :func:`load_controller` put its state in a checkpoint folder
(:data:`CONSTRAINTS_FILE` for a tracker alone, as before; :data:`CONTROLLER_FILE`
otherwise). This module imports neither torch nor a host.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rewardagg
from rewardagg._src.controllers import Controller, controlled_kwargs

__all__ = [
    "ADAPTIVE_OPTIONS",
    "ADAPTIVE_OPTION_HELP",
    "CONSTRAINTS_FILE",
    "CONTROLLER_FILE",
    "AdaptiveOptions",
    "build_controller",
    "check_batch",
    "checkpoint_file",
    "controlled_kwargs",
    "find_part",
    "load_controller",
    "missing_message",
    "parse_adaptive",
    "parse_adaptive_setting",
    "save_controller",
]

#: The file, in a checkpoint folder, with a constraint tracker's state (tracker alone).
CONSTRAINTS_FILE = "rewardagg_constraints.json"
#: The file with any other controller's state (adaptive weights, or adaptive + constraints).
CONTROLLER_FILE = "rewardagg_controller.json"

#: Adaptive-weights settings every host takes (as the host spells them).
ADAPTIVE_OPTIONS = (
    "adaptive",
    "adaptive_tau",
    "adaptive_beta",
    "adaptive_patience",
    "adaptive_z",
    "adaptive_plateau_margin",
)
ADAPTIVE_OPTION_HELP = {
    "adaptive": "adaptive reward weights from each reward's pass rate (rewards in [0, 1]), "
    "with a learning-progress guard: true or false (default false)",
    "adaptive_tau": "softmax temperature on the pass rates (default 7)",
    "adaptive_beta": "EMA decay of the pass rates (default 0.9)",
    "adaptive_patience": "batches without a rise before a reward loses its extra weight "
    "(default 40; 0: no guard)",
    "adaptive_z": "significance, in standard deviations, of a rise (default 3)",
    "adaptive_plateau_margin": "plateau hold: a reward whose pass rate is within this margin "
    "of the best keeps its weight when its guard fires; a number >= 0, or none: no hold, "
    "DESIGN.md 2d's rule exactly (default 0.1)",
}
#: The spellings of "no plateau hold" for ``adaptive_plateau_margin``.
_OFF = ("none", "null", "off")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class AdaptiveOptions:
    """The settings of :class:`rewardagg.AdaptiveWeights` (DESIGN.md 2d)."""

    tau: float = 7.0
    beta: float = 0.9
    patience: int = 40
    z: float = 3.0
    plateau_margin: float | None = 0.1

    def controller(self, reward_names: Sequence[str]) -> rewardagg.AdaptiveWeights:
        """A fresh :class:`rewardagg.AdaptiveWeights` over the host's rewards."""
        return rewardagg.AdaptiveWeights(
            reward_names=[str(n) for n in reward_names],
            tau=self.tau,
            beta=self.beta,
            patience=self.patience,
            z=self.z,
            plateau_margin=self.plateau_margin,
        )


def parse_adaptive(
    given: Mapping[str, Any], spell: Callable[[str], str] = str
) -> AdaptiveOptions | None:
    """:class:`AdaptiveOptions` from a host's ``{option: value}`` (:data:`ADAPTIVE_OPTIONS`
    names; ``None`` = not given; a command line's strings are converted), or ``None`` when
    ``adaptive`` is not on. ``spell(option)`` is the setting as the host spells it.

    Raises:
        ValueError, TypeError: a bad value, or a parameter given without ``adaptive``,
            naming the setting.
    """
    given = {k: v for k, v in given.items() if v is not None and k in ADAPTIVE_OPTIONS}
    on = given.pop("adaptive", False)
    if isinstance(on, str) and on.strip().lower() in _TRUE + _FALSE:
        on = on.strip().lower() in _TRUE
    if not isinstance(on, bool):
        raise TypeError(f"{spell('adaptive')} must be true or false; got {on!r}")
    if not on:
        if given:
            raise ValueError(
                f"{', '.join(spell(k) for k in given)} set without {spell('adaptive')}=true"
            )
        return None
    out: dict[str, Any] = {}
    for key, value in given.items():
        name = key[len("adaptive_") :]
        setting = spell(key)
        if name == "patience":
            try:
                v = int(value) if isinstance(value, str) else value
            except ValueError:
                raise ValueError(f"{setting} must be an integer >= 0; got {value!r}") from None
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{setting} must be an integer >= 0; got {value!r}")
            out[name] = v
            continue
        if name == "plateau_margin" and isinstance(value, str) and value.strip().lower() in _OFF:
            out[name] = None
            continue
        try:
            v = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            extra = " or none (no plateau hold)" if name == "plateau_margin" else ""
            raise ValueError(f"{setting} must be a number{extra}; got {value!r}") from None
        if not math.isfinite(v) or v < 0 or (name == "beta" and v > 1):
            rule = "in [0, 1]" if name == "beta" else "a finite number >= 0"
            if name == "plateau_margin":
                rule += " or none (no plateau hold)"
            raise ValueError(f"{setting} must be {rule}; got {value!r}")
        out[name] = v
    return AdaptiveOptions(**out)


def parse_adaptive_setting(value: Any, setting: str) -> AdaptiveOptions | None:
    """A nested host setting (verl's ``algorithm.rewardagg.adaptive``): ``None``/``false``
    (off), ``true`` (on, the defaults) or a mapping of ``tau``, ``beta``, ``patience``, ``z``,
    ``plateau_margin`` (``null`` or ``none``: no plateau hold) and optionally ``enabled``
    (default true); errors name ``setting.<key>``."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        keys = ("enabled", "tau", "beta", "patience", "z", "plateau_margin")
        unknown = sorted(set(map(str, value)) - set(keys))
        if unknown:
            raise ValueError(f"unknown {setting} setting(s) {unknown}; known: {list(keys)}")
        given = {f"adaptive_{k}": v for k, v in value.items() if k != "enabled"}
        if "plateau_margin" in value and value["plateau_margin"] is None:
            given["adaptive_plateau_margin"] = "none"  # an explicit null: no plateau hold
        given["adaptive"] = value.get("enabled", True)
    else:
        given = {"adaptive": value}

    def spell(option: str) -> str:
        return setting if option == "adaptive" else f"{setting}.{option[len('adaptive_') :]}"

    return parse_adaptive(given, spell)


def check_batch(controller: Any, rewards: Any, mask: Any = None) -> None:
    """The controller's own check of a batch, where it has one (adaptive weights: rewards
    in [0, 1]), so that a batch it would reject fails before anything is computed."""
    check = getattr(controller, "check_batch", None)
    if check is not None:
        check(rewards, mask)


def build_controller(
    tracker: rewardagg.ConstraintTracker | None,
    adaptive: AdaptiveOptions | None,
    reward_names: Sequence[str],
) -> Controller | None:
    """The run's one controller: ``None``, the tracker, the adaptive weights, or both
    combined (weights from the adaptive controller, multipliers from the tracker)."""
    if adaptive is None:
        return tracker
    weights = adaptive.controller(reward_names)
    return weights if tracker is None else rewardagg.combine(weights, tracker)


def find_part(controller: Any, kind: type) -> Any:
    """The part of ``controller`` of type ``kind`` (itself, or inside a combination)."""
    if isinstance(controller, kind):
        return controller
    for part in getattr(controller, "controllers", ()):
        if isinstance(part, kind):
            return part
    return None


def checkpoint_file(controller: Controller) -> str:
    """The file name of ``controller``'s state in a checkpoint folder."""
    if isinstance(controller, rewardagg.ConstraintTracker):
        return CONSTRAINTS_FILE
    return CONTROLLER_FILE


def save_controller(controller: Controller, folder: str) -> str:
    """Write ``controller.state_dict()`` as JSON into ``folder``; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, checkpoint_file(controller))
    with open(path, "w") as f:
        json.dump(controller.state_dict(), f)
    return path


def load_controller(controller: Controller, folder: str) -> str | None:
    """Restore ``controller`` from ``folder``; the path read, or ``None`` (and no change)
    when the folder has no state for it."""
    path = os.path.join(folder, checkpoint_file(controller))
    if not os.path.exists(path):
        return None
    with open(path) as f:
        controller.load_state_dict(json.load(f))
    return path


def missing_message(controller: Controller, folder: str) -> str:
    """What a resumed run says when ``folder`` has no state for ``controller``."""
    name = checkpoint_file(controller)
    if name == CONSTRAINTS_FILE:
        return (
            f"{folder} has no {name}: the constraint multipliers start from constraint_init, "
            "not from where that run left them."
        )
    return (
        f"{folder} has no {name}: the adaptive weights (and any constraint multipliers) start "
        "afresh, not from where that run left them."
    )
