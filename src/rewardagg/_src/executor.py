r"""The one executor every backend shares: it runs a :class:`~rewardagg._src.plan.Plan`.

.. code-block:: text

    sort rows -> stages 1-2 -> constraint terms -> conflict filter + group reweighting
              -> stage 3 -> unsort

Stages 1-2 (with the constraint terms :math:`\sum_c \lambda_c Z_{ic}` and the conflict
verdict, all in sorted row order) come from one of three implementations of the same
contract, :func:`stage12`:

- the fused kernel (numba or Triton, :func:`rewardagg.kernels.fused_scores`);
- the numpy blocks of whole groups (:mod:`rewardagg._src.blocks`);
- whole arrays in the input's library (torch, and grpo's composition on numpy).

Everything after stages 1-2 (reweighting, stage 3, diagnostics) is this module's, once.
grpo is a composition in the same executor: a weighted sum of the raw rewards (a row whose
present rewards all have weight 0 scores 0), standardised or centred inside its group, no
stage 3.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from rewardagg import kernels
from rewardagg._src.aggregators import row_weights
from rewardagg._src.blocks import BlockPlan, block_scores, finite_scores
from rewardagg._src.conflict import conflict_rows, reweight
from rewardagg._src.diagnostics import AggregationInfo, blocked_info
from rewardagg._src.namespace import Ops
from rewardagg._src.normalisation import standardize_sorted
from rewardagg._src.plan import Plan
from rewardagg._src.stage3 import standardize_scores
from rewardagg._src.validation import Prepared, check_finite_or_nan

__all__ = ["execute", "stage12"]


def _no_grad(ops: Any):
    return ops.torch.no_grad() if ops.name == "torch" else contextlib.nullcontext()


def execute(plan: Plan, prep: Prepared) -> tuple[Any, AggregationInfo | None]:
    """``(advantages in the caller's row order and library, info or None)``."""
    ops, layout = prep.ops, plan.layout
    # overflow is detected and raised as a ValueError, not left as a warning + NaN
    with _no_grad(ops), np.errstate(over="ignore", invalid="ignore"):
        s, drop = stage12(plan, prep)
        rho = None
        if plan.conflict is not None:
            s, rho = reweight(s, drop, layout, ops, plan.conflict)
        adv = stage3(plan, s, ops)
        out = prep.cast_out(layout.unsort_rows(adv, ops))
        if not plan.return_info:
            return out, None
        drop_np = None if drop is None else np.asarray(_numpy(drop, ops), dtype=bool)
        info = blocked_info(plan, _numpy(prep.values, ops), _numpy(adv, ops), drop_np, rho)
    return out, info


def _numpy(x: Any, ops: Ops) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else ops.to_numpy(x)


# -- stages 1-2 -------------------------------------------------------------------------------


def stage12(plan: Plan, prep: Prepared) -> tuple[Any, Any]:
    r"""``(S, drop)`` in sorted row order: the stage-2 score plus the constraint terms,
    :math:`S_i = \mathrm{base}_i + \sum_c \lambda_c Z_{ic}` (NaN for a row without a
    score; grpo: its group-normalised sum), and the rows the conflict filter drops
    (``None`` without a filter), by whichever implementation the plan names."""
    if plan.fused:
        return _fused(plan, prep)
    if prep.ops.name == "numpy" and not plan.sum_first:
        return _blocked(plan, prep)
    return _arrays(plan, prep)


def _blocked(plan: Plan, prep: Prepared) -> tuple[Any, Any]:
    bp = BlockPlan(
        plan.reducer,
        dict(plan.reducer_params),
        plan.order,
        plan.stage1.kwargs(),
        plan.weights,
        plan.cols,
        plan.lams,
        plan.conflict,
        prep.values.dtype,
    )
    s, drop = block_scores(prep.values, plan.layout, bp)
    return finite_scores(s, plan.method.name, prep.values.dtype), drop


def _sorted_rewards(prep: Prepared, plan: Plan) -> tuple[Any, Any]:
    """``(rewards, NaN map or None)`` in sorted row order; +-inf raises, naming the
    caller's row."""
    missing = check_finite_or_nan(prep.values, prep.ops, "rewards")
    x = plan.layout.sort_rows(prep.values, prep.ops)
    return x, None if missing is None else plan.layout.sort_rows(missing, prep.ops)


def group_scores(s: Any, plan: Plan, ops: Ops, **stage1: Any) -> Any:
    """Per-row scores standardised (or only centred) inside their group, exactly as stage 1
    treats one reward; NaN stays NaN."""
    s_missing = ops.isnan(s)
    s_missing = s_missing[:, None] if ops.any(s_missing) else None
    out, _ = standardize_sorted(s[:, None], s_missing, plan.layout, ops, **stage1)
    return out[:, 0]


def _grpo_sum(x: Any, missing: Any, plan: Plan, ops: Ops) -> Any:
    r""":math:`s_i = \sum_k w_k R_{ik}` over the present rewards; NaN only for a row with
    every reward missing (present rewards of weight 0 make a score of 0)."""
    w = ops.asarray(plan.weights_or_ones(), like=x)
    if missing is None:
        return ops.dot_last(x, w)
    s = ops.dot_last(ops.where(missing, 0.0, x), w)
    none = ops.amin(ops.where(missing, 1.0, 0.0 * x), -1) > 0
    return ops.where(none, ops.nan, s)


def _batch_std(s: Any, ops: Ops, correction: float) -> float:
    """Standard deviation of the non-NaN entries of 1-D ``s`` (0 when undefined)."""
    keep = _numpy(s, ops)
    keep = keep[~np.isnan(keep)].astype(np.float64)
    if keep.size - correction <= 0 or keep.size < 2:
        return 0.0
    return float(np.std(keep - keep.min(), ddof=correction))


def _grpo(plan: Plan, x: Any, missing: Any, ops: Ops) -> Any:
    """grpo: the sum of the raw rewards, normalised in its group (``scale``)."""
    s = finite_scores(_grpo_sum(x, missing, plan, ops), plan.method.name)
    st = plan.stage1
    scale = plan.grpo_scale
    adv = group_scores(s, plan, ops, **{**st.kwargs(), "scale": scale == "group"})
    if scale == "batch":  # TRL scale_rewards="batch": divide by the std of all row sums
        sd = _batch_std(s, ops, st.correction)
        adv = adv / (sd + st.eps) if sd > 0 else adv * 0.0
    return adv


def _as_float64(x: Any, ops: Ops) -> Any:
    if ops.name == "torch":
        return x.double()
    return np.asarray(x, dtype=np.float64)


def constraint_terms(x: Any, missing: Any, z: Any, plan: Plan, ops: Ops) -> Any:
    r""":math:`\sum_c \lambda_c Z_{ic}` with :math:`Z` of stage 1, 0 where missing; only the
    constrained columns are standardised when stage 1 did not run (``z`` is None)."""
    cols = list(plan.cols)
    if z is None:
        mc = None if missing is None else missing[:, cols]
        zc, _ = standardize_sorted(x[:, cols], mc, plan.layout, ops, **plan.stage1.kwargs())
    else:
        zc = z[:, cols]
    zc = ops.where(ops.isnan(zc), 0.0, zc)
    return ops.dot_last(zc, ops.asarray(np.asarray(plan.lams), like=zc))


def conflict_drop(x: Any, missing: Any, z: Any, plan: Plan, ops: Ops) -> Any:
    """The conflict filter's verdict on the stage-1 values computed in float64 (the
    dtype-independent rule of DESIGN.md 2c): ``z`` is reused when already float64."""
    assert plan.conflict is not None
    if z is None or str(z.dtype) not in ("float64", "torch.float64"):
        z, _ = standardize_sorted(
            _as_float64(x, ops), missing, plan.layout, ops, **plan.stage1.kwargs()
        )
    rw = row_weights(z, plan.weights, ops, missing)
    return conflict_rows(z, rw, ops, plan.conflict)[0]


def _arrays(plan: Plan, prep: Prepared) -> tuple[Any, Any]:
    """Stages 1-2 on whole arrays of the input's library."""
    ops = prep.ops
    x, missing = _sorted_rewards(prep, plan)
    if plan.sum_first:
        return _grpo(plan, x, missing, ops), None
    st = plan.stage1.kwargs()
    z = None
    reducer = plan.reducer
    assert reducer.kernel is not None  # every table entry has one
    if plan.order == "normalize_then_reduce":
        z, _ = standardize_sorted(x, missing, plan.layout, ops, **st)
        s = reducer.kernel(
            z, row_weights(z, plan.weights, ops, missing), ops, **plan.reducer_params
        )
    else:
        x64 = _as_float64(x, ops)  # raw values at any offset: float64 sums for every dtype
        rw = row_weights(x64, plan.weights, ops, missing)
        s = reducer.kernel(x64, rw, ops, **plan.reducer_params)
        s = group_scores(finite_scores(s, plan.method.name), plan, ops, **st)
    if plan.cols:
        s = s + constraint_terms(x, missing, z, plan, ops)
    s = finite_scores(s, plan.method.name)
    drop = None if plan.conflict is None else conflict_drop(x, missing, z, plan, ops)
    return s, drop


def _fused(plan: Plan, prep: Prepared) -> tuple[Any, Any]:
    """Stages 1-2 in one kernel pass over the sorted rows."""
    ops = prep.ops
    x = plan.layout.sort_rows(prep.values, ops)
    filt = plan.conflict
    try:
        code, slots = plan.reducer.fused_args(plan.reducer_params)
        s, keep = kernels.fused_scores(
            x,
            plan.layout.offsets,
            code=code,
            p0=slots[0],
            p1=slots[1],
            weights=plan.weights_or_ones(),
            eps=plan.stage1.eps,
            correction=plan.stage1.correction,
            singleton=plan.stage1.singleton,
            baseline=plan.stage1.baseline,
            order=plan.order,
            mult_cols=plan.cols,
            mult_lams=plan.lams,
            conflict=None if filt is None else filt.mode,
            conflict_threshold=0.8 if filt is None else filt.tau,
            backend=plan.backend,
        )
    except ValueError:
        # the kernel found +-inf in its pass; name the caller's row, not the sorted one
        check_finite_or_nan(prep.values, ops, "rewards")
        raise
    s = finite_scores(s, plan.method.name)
    return s, None if keep is None else ~np.asarray(_numpy(keep, ops), dtype=bool)


# -- stage 3 ----------------------------------------------------------------------------------


def stage3(plan: Plan, s: Any, ops: Ops) -> Any:
    """Stage 3 as configured; rows without a score get 0."""
    st = plan.stage1
    if plan.center == "group" and not plan.sum_first:  # the group mean over scored rows
        s = group_scores(s, plan, ops, eps=st.eps, correction=0.0, scale=False)
    if not plan.batch_norm:
        return ops.where(ops.isnan(s), 0.0, s)
    return standardize_scores(
        s,
        ops,
        eps=st.eps,
        correction=st.correction,
        process_group=plan.process_group,
        centre=plan.center == "batch",
    )
