r"""The method table: one entry per advantage method, read by every consumer.

An entry (:class:`Aggregator`) says everything the library needs to know about a method:
its name, its kind (stages 1-2-3 on group z-scores, or GRPO's sum first), its parameters
with defaults, validators and display symbols, its stage-2 reducer and attention
(:math:`\partial S / \partial Z`) on validated arrays, the stage order it runs in by
default, its fused-kernel code with the parameter slots the kernels read
(``(code, p0, p1)``: kernels never see a parameter by name), and the settings the demo and
the audit sweep. The pipeline, the kernels, the adapters (their settings parser), the CLI,
the demo, the audit and the registry-wide tests all read this table; adding a method is
one entry here plus its reducer (and, for speed, one fused branch).

Method names and parameter names are spelled here and in the reducers' own modules only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from rewardagg._src import aggregators as agg
from rewardagg._src.validation import (
    check_choice,
    check_nonnegative,
    check_real,
    check_unit_interval,
)
from rewardagg.kernels.codes import FusedCode

__all__ = [
    "BUILTINS",
    "CONFLICTS",
    "FUSED_SLOTS",
    "ORDERS",
    "Aggregator",
    "DisplayPart",
    "FusedPart",
    "MathPart",
    "Param",
    "parse_value",
]

ORDERS = ("normalize_then_reduce", "reduce_then_normalize")
"""Stage orders (DESIGN.md section 2b); z-score methods default to the first."""

FUSED_SLOTS = 2
"""Number of float parameter slots the fused kernels take after the method code."""


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string; got {value!r}")
    return value


def _pass(value: Any, name: str) -> Any:
    return value


@dataclass(frozen=True)
class Param:
    """One method parameter: its default, validator and display symbol.

    Attributes:
        name: keyword name (``advantages(..., name=value)``).
        default: value used when the caller gives none.
        check: ``check(value, name) -> value`` raising ``TypeError``/``ValueError`` with a
            message that names the parameter; returns the normalised value.
        symbol: short name for labels (``"softmin k=1"``); the name itself by default.
        help: one line for command-line help and docs.
    """

    name: str
    default: Any
    check: Callable[[Any, str], Any] = _pass
    symbol: str = ""
    help: str = ""

    @classmethod
    def infer(
        cls, name: str, default: Any, check: Callable[[Any, str], Any] | None = None
    ) -> Param:
        """A parameter of a registered method (labelled by its name): numbers are checked
        as real numbers, strings as strings, anything else is passed through, unless
        ``check`` is given."""
        if check is None and isinstance(default, numbers.Real) and not isinstance(default, bool):
            check = check_real
        elif check is None:
            check = _check_str if isinstance(default, str) else _pass
        return cls(name, default, check, name)


def parse_value(param: Param, value: Any) -> Any:
    """``value`` from a command line or config file (a string) in the parameter's type,
    then validated: ``"0.5"`` -> 0.5 for a numeric parameter, ``"inf"`` -> inf."""
    default = param.default
    if isinstance(value, str) and isinstance(default, numbers.Real):
        if not isinstance(default, bool):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{param.name} must be a number; got {value!r}") from None
    return param.check(value, param.name)


@dataclass(frozen=True)
class MathPart:
    r"""What a method computes: its stage-2 reducer on validated arrays
    ``kernel(z, row_weights, ops, **params)``, its attention :math:`\partial S/\partial Z`
    (same signature; ``None``: unknown), ``limits(params) -> (name, params) | None`` (the
    entry that computes it exactly for these parameters), and whether it is defined for
    non-negative values only."""

    kernel: Callable[..., Any] | None
    attention: Callable[..., Any] | None = None
    limits: Callable[[Mapping[str, Any]], tuple[str, dict] | None] | None = None
    nonnegative: bool = False


@dataclass(frozen=True)
class FusedPart:
    """How the fused kernels run it: a :class:`~rewardagg.kernels.FusedCode` (``None``:
    the array path only), the parameter filling each float slot, and the fused backends
    that implement the code."""

    code: FusedCode | None = None
    slots: tuple[str, ...] = ()
    backends: tuple[str, ...] = ("numba", "triton")


@dataclass(frozen=True)
class DisplayPart:
    """How people see it: a one-line summary, a short label and the settings the demo and
    the audit sweep."""

    summary: str = ""
    short: str = ""
    sweep: tuple[Mapping[str, Any], ...] = ({},)


@dataclass(frozen=True)
class Aggregator:
    """A method: one entry of the table (built in or registered).

    Attributes:
        name: registry key.
        reduce: public reducer ``reduce(z, *, weights, **params)`` over the last axis.
        params: accepted method parameters and their defaults.
        kind: ``"standardized"`` (stages 1-2-3) or ``"sum_first"`` (GRPO).
        kernel: private reducer on validated arrays ``kernel(z, row_weights, ops, **params)``.
        attention: private ``dS/dZ`` on validated arrays, same signature as ``kernel``;
            ``None`` when unknown (diagnostics then report NaN).
        specs: the :class:`Param` of each parameter, in the order of ``params``.
        order: the stage order the method runs in by default (:data:`ORDERS`).
        orders: the stage orders the method accepts.
        fused_code: the method's code in the fused kernels (``None``: array path only).
        fused_slots: which parameter fills each float slot of the fused kernels.
        fused_backends: the fused backends that implement ``fused_code`` (Triton merges
            reward blocks online, which an order statistic such as CVaR cannot).
        sweep: parameter settings the demo and the audit compare (``({},)``: defaults).
        limits: ``limits(params) -> (name, params) | None``: the method another entry
            computes exactly for these parameters (softmin at kappa 0 is mean), so kernels
            need no special case.
        summary: one line for tables, help and docs.
        short: display name in labels (the name by default).
        nonnegative: the reducer is defined for non-negative values only (rewards with a
            negative value are a ``ValueError``; the audit skips it on such data).
        conflict: the GD²PO conflict filter the method runs by default (``None``,
            ``"hard"``, ``"snr"``; DESIGN.md section 2c): presets such as ``"gd2po"``.
        conflict_threshold: the default ``tau`` of the ``"snr"`` filter.
    """

    name: str
    reduce: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "standardized"
    kernel: Callable[..., Any] | None = None
    attention: Callable[..., Any] | None = None
    specs: tuple[Param, ...] = ()
    order: str = "normalize_then_reduce"
    orders: tuple[str, ...] = ORDERS
    fused_code: FusedCode | None = None
    fused_slots: tuple[str, ...] = ()
    fused_backends: tuple[str, ...] = ("numba", "triton")
    sweep: tuple[Mapping[str, Any], ...] = ({},)
    limits: Callable[[Mapping[str, Any]], tuple[str, dict] | None] | None = None
    summary: str = ""
    short: str = ""
    nonnegative: bool = False
    conflict: str | None = None
    conflict_threshold: float = 0.8

    def __post_init__(self) -> None:
        given = {p.name for p in self.specs}
        missing = tuple(Param.infer(n, d) for n, d in self.params.items() if n not in given)
        specs = self.specs + missing
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "params", MappingProxyType({p.name: p.default for p in specs}))

    @classmethod
    def of(
        cls,
        name: str,
        reduce: Callable[..., Any],
        *,
        math: MathPart,
        fused: FusedPart = FusedPart(),
        display: DisplayPart = DisplayPart(),
        **rest: Any,
    ) -> Aggregator:
        """An entry from its typed parts (``rest``: ``specs``, ``kind``, ``order``,
        ``orders``, ``conflict``, ``conflict_threshold``)."""
        return cls(
            name,
            reduce,
            kernel=math.kernel,
            attention=math.attention,
            limits=math.limits,
            nonnegative=math.nonnegative,
            fused_code=fused.code,
            fused_slots=fused.slots,
            fused_backends=fused.backends,
            summary=display.summary,
            short=display.short,
            sweep=display.sweep,
            **rest,
        )

    @property
    def math(self) -> MathPart:
        """The math part: reducer, attention, limits."""
        return MathPart(self.kernel, self.attention, self.limits, self.nonnegative)

    @property
    def fused(self) -> FusedPart:
        """The fused part: kernel code, parameter slots, backends."""
        return FusedPart(self.fused_code, self.fused_slots, self.fused_backends)

    @property
    def display(self) -> DisplayPart:
        """The display part: summary, short label, sweep."""
        return DisplayPart(self.summary, self.short, self.sweep)

    def spec(self, name: str) -> Param:
        """The :class:`Param` called ``name``."""
        for p in self.specs:
            if p.name == name:
                return p
        raise self._unknown([name])

    def _unknown(self, names: list[str]) -> TypeError:
        takes = ", ".join(self.params) or "no parameters"
        return TypeError(
            f"method {self.name!r} does not take {', '.join(names)}; it takes: {takes}"
        )

    def bind(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``given``, each validated; unknown names raise
        ``TypeError``."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise self._unknown(unknown)
        return {p.name: p.check(given.get(p.name, p.default), p.name) for p in self.specs}

    def parse(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Like :meth:`bind` for values from a command line or config file (strings are
        converted to the parameter's type); only the given names are returned."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise self._unknown(unknown)
        return {n: parse_value(self.spec(n), v) for n, v in given.items()}

    def check_order(self, order: str | None) -> str:
        """The stage order to run (``None``: the method's default); a ``ValueError`` saying
        why when the method cannot run in ``order``."""
        if order is None:
            return self.order
        check_choice(order, "order", ORDERS)
        if order not in self.orders:
            why = _ORDER_REASONS.get(self.name, "")
            raise ValueError(
                f"method {self.name!r} runs only with order={self.orders[0]!r}; "
                f"got order={order!r}{why}"
            )
        return order

    def fused_args(self, params: Mapping[str, Any]) -> tuple[FusedCode, tuple[float, ...]]:
        """``(code, (p0, p1, ...))`` for the fused kernels (unused slots are 0)."""
        if self.fused_code is None:
            raise ValueError(f"method {self.name!r} has no fused kernel")
        slots = [float(params[n]) for n in self.fused_slots]
        return self.fused_code, tuple(slots + [0.0] * (FUSED_SLOTS - len(slots)))

    def label(self, params: Mapping[str, Any] | None = None) -> str:
        """Display name with the parameters that have a symbol: ``"softmin k=1"``."""
        params = self.params if params is None else params
        parts = [f"{p.symbol}={_fmt(params[p.name])}" for p in self.specs if p.symbol]
        return " ".join([self.short or self.name, *parts])


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kappa(value: Any, name: str) -> float:
    return check_nonnegative(value, name, allow_inf=True)


def _nonneg(value: Any, name: str) -> float:
    return check_nonnegative(value, name)


SCALES = ("group", "batch", "none")


def _scale(value: Any, name: str) -> str:
    return check_choice(value, name, SCALES)


def _alpha_limits(params: Mapping[str, Any]) -> tuple[str, dict] | None:
    return ("mean", {}) if params["alpha"] == 1 else None


def _power_limits(params: Mapping[str, Any]) -> tuple[str, dict] | None:
    if params["p"] == 1:
        return "mean", {}
    return ("min", {}) if params["p"] == -math.inf else None


def _softmin_limits(params: Mapping[str, Any]) -> tuple[str, dict] | None:
    if params["kappa"] < agg.KAPPA_MEAN_LIMIT:  # 0 included: see its derivation
        return "mean", {}
    if math.isinf(params["kappa"]):
        return "min", {}
    return None


SOFTMIN_KAPPAS = (0.1, 0.25, 0.5, 1.0, 2.0)
"""The softmin sweep (and mean_variance's at lam = kappa / 2) of the demo, audit and tests."""

KAPPA = Param("kappa", 1.0, _kappa, "k", "softmin risk coefficient (0: mean, inf: min)")
LAM = Param("lam", 0.5, _nonneg, "l", "variance penalty (kappa / 2 matches softmin)")
ALPHA = Param("alpha", 0.25, check_unit_interval, "a", "CVaR tail mass in (0, 1] (1: mean)")
POWER = Param("p", -1.0, check_real, "p", "power-mean exponent (1 mean, 0 geometric, -inf min)")
SCALE = Param("scale", "group", _scale, "", "grpo: 'group', 'batch' or 'none' (Dr. GRPO)")

BUILTINS: tuple[Aggregator, ...] = (
    Aggregator.of(
        "grpo",
        agg.weighted_sum,
        kind="sum_first",
        specs=(SCALE,),
        order="reduce_then_normalize",
        orders=("reduce_then_normalize",),
        math=MathPart(agg.weighted_sum_kernel, agg.weighted_sum_attention),
        display=DisplayPart("sum the raw rewards, then group z-score; no stage 3 (TRL's default)"),
    ),
    Aggregator.of(
        "gdpo",
        agg.weighted_sum,
        math=MathPart(agg.weighted_sum_kernel, agg.weighted_sum_attention),
        fused=FusedPart(FusedCode.SUM),
        display=DisplayPart("weighted sum of group z-scores (GDPO; TRL normalize_then_sum)"),
    ),
    Aggregator.of(
        "mean",
        agg.weighted_mean,
        math=MathPart(agg.weighted_mean_kernel, agg.weighted_mean_attention),
        fused=FusedPart(FusedCode.MEAN),
        display=DisplayPart("weighted mean of group z-scores (softmin at kappa 0)"),
    ),
    Aggregator.of(
        "softmin",
        agg.softmin,
        specs=(KAPPA,),
        math=MathPart(agg.softmin_kernel, agg.softmin_attention, _softmin_limits),
        fused=FusedPart(FusedCode.SOFTMIN, ("kappa",)),
        display=DisplayPart(
            "SoftMin of group z-scores: mean minus a variance penalty (RVPO)",
            # reaches the Taylor regime (kappa <= 0.25 for |Z| <= 2.5) and the near-min one
            sweep=tuple({"kappa": k} for k in SOFTMIN_KAPPAS),
        ),
    ),
    Aggregator.of(
        "mean_variance",
        agg.mean_variance,
        specs=(LAM,),
        math=MathPart(agg.mean_variance_kernel, agg.mean_variance_attention),
        fused=FusedPart(FusedCode.MEAN_VARIANCE, ("lam",)),
        display=DisplayPart(
            "mean minus lam times the variance of group z-scores (softmin's twin)",
            short="mean_var",
            sweep=tuple({"lam": k / 2} for k in SOFTMIN_KAPPAS),  # softmin's Taylor twin
        ),
    ),
    Aggregator.of(
        "min",
        agg.weighted_min,
        math=MathPart(agg.weighted_min_kernel, agg.weighted_min_attention),
        fused=FusedPart(FusedCode.MIN),
        display=DisplayPart("worst group z-score (softmin at kappa inf)"),
    ),
    Aggregator.of(
        "cvar",
        agg.cvar,
        specs=(ALPHA,),
        math=MathPart(agg.cvar_kernel, agg.cvar_attention, _alpha_limits),
        # Triton merges reward blocks online, which an order statistic cannot
        fused=FusedPart(FusedCode.CVAR, ("alpha",), backends=("numba",)),
        display=DisplayPart(
            "mean of the worst alpha share of a row's values (CVaR)",
            sweep=({"alpha": 0.25}, {"alpha": 0.5}),
        ),
    ),
    Aggregator.of(
        "power_mean",
        agg.power_mean,
        specs=(POWER,),
        order="reduce_then_normalize",
        orders=("reduce_then_normalize",),
        math=MathPart(
            agg.power_mean_kernel, agg.power_mean_attention, _power_limits, nonnegative=True
        ),
        fused=FusedPart(FusedCode.POWER_MEAN, ("p",)),
        display=DisplayPart(
            "power mean of the raw rewards, then group z-score (p=0 geometric, -inf min)",
            sweep=({"p": -1.0}, {"p": 0.0}),
        ),
    ),
)

_GDPO = BUILTINS[1]
BUILTINS += (
    replace(
        _GDPO,
        name="gd2po",
        orders=("normalize_then_reduce",),
        conflict="hard",
        summary="GDPO with GD2PO's conflict filter: rows whose per-reward advantages "
        "disagree in sign are dropped, groups reweighted by their kept share",
    ),
    replace(
        _GDPO,
        name="gd2po_snr",
        orders=("normalize_then_reduce",),
        conflict="snr",
        conflict_threshold=0.8,
        summary="GDPO with GD2PO's soft filter: drop rows whose signed terms mostly cancel "
        "(|sum t| / sum |t| < 0.8), groups reweighted",
    ),
)

CONFLICTS = ("hard", "snr")
"""GD²PO conflict filters (DESIGN.md section 2c)."""

_ORDER_REASONS = {
    "power_mean": (
        ": a power mean is defined for non-negative values, and z-scores are negative by "
        "construction (it reduces the raw rewards, then standardises the score)"
    ),
    "grpo": ": grpo sums the raw rewards first; the other order is 'gdpo'",
    "gd2po": ": its conflict filter compares per-reward z-scores",
    "gd2po_snr": ": its conflict filter compares per-reward z-scores",
}
