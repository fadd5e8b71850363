r"""Adaptive reward weights: weight each reward by how rarely it is met, and stop weighting a
reward whose pass rate does not rise (DESIGN.md section 2d).

State per reward column :math:`k`, updated AFTER each batch from that batch's rewards (the
weights of batch :math:`t` come from batches before :math:`t`; the first batch gets
:math:`w = 1`). With :math:`r_k` the mean and :math:`n_k` the count of the present entries of
column :math:`k` in the batch (rewards in :math:`[0, 1]`; a column absent from the whole batch
leaves all of its state unchanged), a bias-corrected exponential moving average with decay
:math:`\beta`:

.. math::

    S_{1,k} \leftarrow \beta S_{1,k} + 1, \qquad S_{2,k} \leftarrow \beta^2 S_{2,k} + 1,
    \qquad p_k \leftarrow \frac{\beta S_{1,k}^{\text{old}} p_k + r_k}{S_{1,k}}, \qquad
    \bar n_k \leftarrow \frac{\beta S_{1,k}^{\text{old}} \bar n_k + n_k}{S_{1,k}}

and the variance of the pass-rate estimate

.. math::

    V_k = \frac{\max\bigl(p_k (1 - p_k),\, 1 / \bar n_k\bigr)}{\bar n_k}
          \, \frac{S_{2,k}}{S_{1,k}^2}.

Learning progress over a window of :math:`H` updates of the column (``patience``; with fewer
stored, the oldest stored one):

.. math::

    \text{prog}_k = p_k(t) - p_k(t - H) > z \sqrt{V_k(t) + V_k(t - H)}

(no stored update: no progress). The stall counter :math:`c_k` is reset to 0 on progress,
grows by 1 when there is none and the weight used for this batch was above 1, and is
unchanged otherwise. The trusted set is :math:`T = \{k \text{ seen at least once},\ c_k < H\}`.
The weights are :math:`w_k = 1` outside :math:`T` and, on :math:`T`,

.. math::

    s = \operatorname{softmax}(-\tau p_T), \qquad
    s_k \leftarrow \max\bigl(s_k, 10^{-3} \max_j s_j\bigr), \qquad
    w_k = |T| \, \frac{s_k}{\sum_{j \in T} s_j},

so a reward that is rarely met gets up to :math:`|T|` times the weight of the others, and one
that gets extra weight for :math:`H` updates without a :math:`z`-sigma rise of its pass rate
falls back to GDPO's weight 1 (until its pass rate rises again). :math:`K = 1`: :math:`w = [1]`;
:math:`H = 0` disables the guard (:math:`T` = every reward seen, :math:`w = K \operatorname
{softmax}(-\tau p)` once all are seen). The weights enter as GDPO's reward weights
(``advantages(..., weights=w)``, any z-score method).

The default rule adds a *plateau hold* (``plateau_margin`` :math:`\delta = 0.1`) and uses
:math:`\tau = 7` (DESIGN.md 2d's rule: ``tau=10, plateau_margin=None``). A reward that
loses trust remembers its pass rate :math:`p^*_k`; while distrusted with
:math:`p_k < p^*_k - \delta` it is held: it joins the softmax set
:math:`M = T \cup \{\text{held}\}` (weights on :math:`M` sum to :math:`|M|`) without its
stall counter moving, until it rises back above the margin or shows progress (then it is
trusted again and :math:`p^*_k` is forgotten). Optional, off by default:
``patience_growth`` :math:`g` (patience :math:`H g^{m_k}` after :math:`m_k` re-trusts),
``burn_in`` :math:`B` with ``burn_in_z`` :math:`z_B` (a stall counter reaching :math:`B`
without a :math:`z_B`-sigma rise over the window distrusts at once), ``trial_cap``.

What it costs (measured, docs/math.md): up to :math:`H` batches of misdirected weight per
reward the policy cannot move; under judge noise a slowly rising reward can lose its trust
(and :math:`\tau = 7` finds a rare reward under judge noise less often than 10); a progress
test cannot tell "cannot move" from "held back by a conflicting reward", and the plateau
hold only defends such a reward at its plateau minus :math:`\delta`.

References:
    Graves, Bellemare, Menick, Munos, Kavukcuoglu, "Automated Curriculum Learning for Neural
    Networks", ICML 2017, https://arxiv.org/abs/1704.03003 (learning progress as a signal);
    Portelas, Colas, Hofmann, Oudeyer, "Teacher algorithms for curriculum learning of Deep RL
    in continuously parameterized environments" (ALP-GMM), CoRL 2019,
    https://arxiv.org/abs/1910.07224 (absolute learning progress over a window).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewardagg._src.multipliers import check_names
from rewardagg._src.namespace import is_torch
from rewardagg._src.pipeline import advantages
from rewardagg._src.validation import check_nonnegative

__all__ = ["AdaptiveWeights", "column_stats", "merge_weights"]

_FLOOR = 1e-3
_STATE_VERSION = 2
_SETTINGS = ("patience_growth", "burn_in", "burn_in_z", "plateau_margin")
_STATE_KEYS = (
    "version", "n_rewards", "reward_names", "tau", "beta", "patience", "z", "trial_cap",
    *_SETTINGS, "step", "s1", "s2", "pass_rate", "count", "stall", "history", "proven",
    "retrust", "plateau",
)  # fmt: skip


def column_stats(rewards: Any, mask: Any = None, *, unit: bool = True) -> tuple[np.ndarray, ...]:
    """``(sums, counts)`` (float64, one per column) of the present values of ``rewards``
    (``(N, K)`` or ``(N,)``; NaN or ``mask`` False = missing). ``unit``: a present value
    outside ``[0, 1]`` is a ``ValueError`` naming ``rewards`` (pass rates need ``[0, 1]``)."""
    if is_torch(rewards):
        r = rewards.detach().to("cpu").double().numpy()
    else:
        try:
            r = np.asarray(rewards, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"rewards must be an (N, K) array of numbers; got {rewards!r}"
            ) from None
    if r.ndim == 1:
        r = r.reshape(-1, 1)
    if r.ndim != 2:
        raise ValueError(f"rewards must have shape (N, K) or (N,); got {r.shape}")
    present = ~np.isnan(r)
    if mask is not None:
        m = mask.detach().cpu().numpy() if is_torch(mask) else np.asarray(mask)
        if m.size != r.size:
            raise ValueError(f"mask must have the shape of rewards {r.shape}; got {m.shape}")
        present &= m.reshape(r.shape).astype(bool)
    values = np.where(present, r, 0.0)
    if unit and np.any((values < 0.0) | (values > 1.0)):
        rows, cols = np.nonzero((values < 0.0) | (values > 1.0))
        raise ValueError(
            "rewards must lie in [0, 1] for AdaptiveWeights (its weights follow each reward's "
            f"pass rate); got {r[rows[0], cols[0]]!r} at row {rows[0]}, column {cols[0]} "
            "(rescale the reward, or mark it missing with NaN)"
        )
    return values.sum(0), present.sum(0).astype(np.float64)


def merge_weights(given: Any, own: np.ndarray) -> np.ndarray:
    """The caller's ``weights=`` (or ``None``) times a controller's weights, elementwise."""
    if given is None:
        return own
    if is_torch(given):
        given = given.detach().cpu().double().numpy()
    try:
        g = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"weights must be a sequence of {own.size} numbers; got {given!r}"
        ) from None
    if g.ndim == 0 and own.size == 1:
        g = g.reshape(1)
    if g.shape != own.shape:
        raise ValueError(f"weights must have shape ({own.size},), one per reward; got {g.shape}")
    return g * own


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    return int(value)


class AdaptiveWeights:
    r"""Reward weights that follow each reward's running pass rate, with a learning-progress
    guard (DESIGN.md section 2d; the rule and its references are in the module docstring
    :mod:`rewardagg._src.adaptive`).

    ``aw.advantages(rewards, method="gdpo", **kwargs)`` computes
    :func:`rewardagg.advantages` with ``weights=aw.weights`` (times any ``weights=`` given),
    THEN updates the state from this batch. Rewards must lie in :math:`[0, 1]` (pass/fail
    criteria, judge scores); a present value outside is a ``ValueError`` naming ``rewards``,
    raised before anything is computed or changed. Save ``state_dict()`` (JSON types) with the
    trainer's checkpoint and restore it with ``load_state_dict()``.

    Args:
        n_rewards: K; ``None``: ``len(reward_names)``, or taken from the first batch.
        reward_names: one name per reward column (keys of :meth:`metrics`).
        tau: softmax temperature :math:`\tau \ge 0` on the pass rates (default 7; DESIGN.md
            2d's rule has 10).
        beta: EMA decay :math:`\beta \in [0, 1]` (default 0.9).
        patience: window and patience :math:`H \ge 0` in updates (default 40; 0 disables the
            learning-progress guard).
        z: significance :math:`z \ge 0` of a rise of the pass rate (default 3).
        trial_cap: ``None`` (default, DESIGN.md 2d exactly) or :math:`c \ge 1`: a trusted
            reward that has never shown progress (its trial) gets at most weight :math:`c`,
            the excess going to the other trusted rewards in proportion to their weights
            (water-filling, so the weights on :math:`T` still sum to :math:`|T|`); no
            effect with ``patience=0``. An experiment on the gap DESIGN.md 2d names (the
            weight an unlearnable reward takes during its trial).
        patience_growth: :math:`g \ge 1` (default 1: DESIGN.md 2d): a reward that regained
            trust :math:`m_k` times (a significant rise after it lost trust) loses it after
            :math:`H_k = H g^{m_k}` stalled updates instead of :math:`H`.
        burn_in: ``None`` (default) or :math:`B \ge 1`: when a trusted reward's stall
            counter reaches :math:`B < H_k` and its pass rate has not risen by
            :math:`z_B \sqrt{V_k(t) + V_k(t - H)}` over the window, it loses trust at once.
        burn_in_z: :math:`z_B \ge 0` of the burn-in test (default 1).
        plateau_margin: :math:`\delta \ge 0` (default 0.1) or ``None`` (DESIGN.md 2d): a reward remembers its
            pass rate :math:`p^*_k` when it loses trust; while distrusted with
            :math:`p_k < p^*_k - \delta` it is *held* (:attr:`held`): it takes part in the
            softmax like a trusted reward (without stalling) until it rises back or is
            re-trusted (which forgets :math:`p^*_k`).

    Examples:
        >>> import numpy as np
        >>> import rewardagg as ra
        >>> aw = ra.AdaptiveWeights(reward_names=["format", "correct"])
        >>> R = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
        >>> adv = aw.advantages(R, group_size=2)   # first batch: weights 1
        >>> aw.pass_rates                          # format met by 3/4, correct by 1/4
        [0.75, 0.25]
        >>> [round(w, 4) for w in aw.weights]      # 2 softmax(-7 p): correct gets the weight
        [0.0586, 1.9414]
    """

    def __init__(
        self,
        n_rewards: int | None = None,
        *,
        reward_names: Sequence[str] | None = None,
        tau: float = 7.0,
        beta: float = 0.9,
        patience: int = 40,
        z: float = 3.0,
        trial_cap: float | None = None,
        patience_growth: float = 1.0,
        burn_in: int | None = None,
        burn_in_z: float = 1.0,
        plateau_margin: float | None = 0.1,
    ) -> None:
        self.reward_names = check_names(reward_names, None)
        if n_rewards is not None:
            n_rewards = _check_int(n_rewards, "n_rewards")
            if n_rewards == 0:
                raise ValueError("n_rewards must be >= 1; got 0")
            check_names(reward_names, n_rewards)
        elif self.reward_names is not None:
            n_rewards = len(self.reward_names)
        self.tau = check_nonnegative(tau, "tau")
        self.beta = check_nonnegative(beta, "beta")
        if self.beta > 1:
            raise ValueError(f"beta must be in [0, 1]; got {beta!r}")
        self.patience = _check_int(patience, "patience")
        self.z = check_nonnegative(z, "z")
        if trial_cap is not None:
            trial_cap = check_nonnegative(trial_cap, "trial_cap")
            if trial_cap < 1:
                raise ValueError(f"trial_cap must be >= 1 or None; got {trial_cap!r}")
        self.trial_cap = trial_cap
        self.patience_growth = check_nonnegative(patience_growth, "patience_growth")
        if self.patience_growth < 1:
            raise ValueError(f"patience_growth must be >= 1; got {patience_growth!r}")
        if burn_in is not None:
            burn_in = _check_int(burn_in, "burn_in")
            if burn_in == 0:
                raise ValueError("burn_in must be >= 1 or None; got 0")
        self.burn_in = burn_in
        self.burn_in_z = check_nonnegative(burn_in_z, "burn_in_z")
        if plateau_margin is not None:
            plateau_margin = check_nonnegative(plateau_margin, "plateau_margin")
        self.plateau_margin = plateau_margin
        self.step = 0
        self.n_rewards: int | None = None
        if n_rewards is not None:
            self._reset(n_rewards)

    # -- state ------------------------------------------------------------------------------

    def _reset(self, k: int) -> None:
        self.n_rewards = k
        self._s1 = [0.0] * k
        self._s2 = [0.0] * k
        self._p = [0.0] * k
        self._nbar = [0.0] * k
        self._stall = [0] * k
        self._proven = [False] * k
        self._retrust = [0] * k
        self._plateau: list[float | None] = [None] * k
        self._history: list[list[tuple[float, float]]] = [[] for _ in range(k)]

    def _names(self) -> list[str]:
        k = self.n_rewards or 0
        return (
            list(self.reward_names) if self.reward_names is not None else [str(i) for i in range(k)]
        )

    @property
    def trusted(self) -> list[bool]:
        r"""Per reward: in the trusted set :math:`T` (seen at least once, stall counter below
        its patience :math:`H g^{m_k}`; every seen reward when ``patience=0``)."""
        if self.n_rewards is None:
            return []
        return [
            s1 > 0 and (self.patience == 0 or c < self._patience_of(i))
            for i, (s1, c) in enumerate(zip(self._s1, self._stall, strict=True))
        ]

    def _patience_of(self, k: int) -> float:
        """:math:`H_k = H g^{m_k}`: the patience after ``m_k`` re-trusts."""
        return self.patience * self.patience_growth ** self._retrust[k]

    @property
    def held(self) -> list[bool]:
        r"""Per reward: distrusted but held at its plateau (``plateau_margin``): its pass
        rate fell below :math:`p^*_k - \delta`, so it gets a trusted reward's weight."""
        if self.n_rewards is None:
            return []
        d = self.plateau_margin
        return [
            d is not None and not t and q is not None and p < q - d
            for t, q, p in zip(self.trusted, self._plateau, self._p, strict=True)
        ]

    @property
    def pass_rates(self) -> list[float]:
        """The bias-corrected EMA :math:`p_k` of each reward's pass rate (0 before it is seen)."""
        return [] if self.n_rewards is None else list(self._p)

    @property
    def weights(self) -> list[float]:
        """The weights the next batch gets, one per reward (all 1 before the first batch)."""
        k = self.n_rewards
        if k is None:
            return []
        w = [1.0] * k
        on = [i for i, (t, h) in enumerate(zip(self.trusted, self.held, strict=True)) if t or h]
        if k == 1 or not on:
            return w
        low = min(self._p[i] for i in on)
        s = [math.exp(-self.tau * (self._p[i] - low)) for i in on]
        top = max(s)
        s = [max(v, _FLOOR * top) for v in s]
        total = math.fsum(s)
        for i, v in zip(on, s, strict=True):
            w[i] = len(on) * v / total
        if self.trial_cap is not None and self.patience > 0:
            _cap_trials(w, on, [i for i in on if not self._proven[i]], self.trial_cap)
        return w

    def advantage_kwargs(self) -> dict[str, Any]:
        """What this controller adds to a :func:`rewardagg.advantages` call:
        ``{"weights": ...}`` (empty before the number of rewards is known)."""
        return {} if self.n_rewards is None else {"weights": np.asarray(self.weights)}

    def check_batch(self, rewards: Any, mask: Any = None) -> None:
        """Raise (``ValueError`` naming ``rewards``) if :meth:`update` would reject this batch:
        a present reward outside ``[0, 1]``, or a K other than this controller's."""
        sums, _ = column_stats(rewards, mask)
        if self.n_rewards is not None and sums.size != self.n_rewards:
            raise ValueError(
                f"rewards has {sums.size} column(s); this AdaptiveWeights has "
                f"n_rewards={self.n_rewards}"
            )
        if self.reward_names is not None and sums.size != len(self.reward_names):
            raise ValueError(
                f"rewards has {sums.size} column(s) but reward_names names {len(self.reward_names)}"
            )

    # -- the rule ---------------------------------------------------------------------------

    def advantages(self, rewards: Any, *, method: str = "gdpo", **kwargs: Any) -> Any:
        """:func:`rewardagg.advantages` with the current weights (times any ``weights=``
        given), then :meth:`update` from this batch. ``kwargs`` are those of
        :func:`rewardagg.advantages` (``process_group`` also reduces the pass-rate sums and
        counts across ranks, so every rank holds the same weights)."""
        mask = kwargs.get("mask")
        self.check_batch(rewards, mask)
        k = column_stats(rewards, mask)[0].size
        own = np.asarray(self.weights) if self.n_rewards is not None else np.ones(k)
        kwargs["weights"] = merge_weights(kwargs.get("weights"), own)
        if self.reward_names is not None and kwargs.get("reward_names") is None:
            kwargs["reward_names"] = self.reward_names
        out = advantages(rewards, method=method, **kwargs)
        self.update(rewards, mask=mask, process_group=kwargs.get("process_group"))
        return out

    def update(self, rewards: Any, *, mask: Any = None, process_group: Any = None) -> list[float]:
        """One step of the rule from a batch of ``(N, K)`` rewards in ``[0, 1]`` (NaN or
        ``mask=False`` = missing); the weight "used for this batch" is :attr:`weights` before
        the step. Returns the new weights."""
        self.check_batch(rewards, mask)
        sums, counts = column_stats(rewards, mask)
        if process_group is not None:
            sums, counts = _all_reduce(sums, counts, process_group)
        if self.n_rewards is None:
            self._reset(int(sums.size))
        used = self.weights
        beta, horizon = self.beta, self.patience
        for k in range(sums.size):
            n = float(counts[k])
            if n == 0:
                continue  # absent from the whole batch: nothing changes
            r = float(sums[k]) / n
            s1_old = self._s1[k]
            s1 = beta * s1_old + 1.0
            s2 = beta * beta * self._s2[k] + 1.0
            p = (beta * s1_old * self._p[k] + r) / s1
            nbar = (beta * s1_old * self._nbar[k] + n) / s1
            var = max(p * (1.0 - p), 1.0 / nbar) / nbar * s2 / (s1 * s1)
            self._s1[k], self._s2[k], self._p[k], self._nbar[k] = s1, s2, p, nbar
            if horizon == 0:
                continue
            hist = self._history[k]
            if hist:
                p_old, v_old = hist[0]
                rise, sd = p - p_old, math.sqrt(var + v_old)
                progress = rise > self.z * sd
            else:
                progress = False
            limit = self._patience_of(k)
            was_trusted = self._stall[k] < limit
            if progress:
                if not was_trusted:  # re-trusted: longer patience, plateau forgotten
                    self._retrust[k] += 1
                    self._plateau[k] = None
                self._stall[k] = 0
                self._proven[k] = True
            elif used[k] > 1.0 and was_trusted:
                self._stall[k] += 1
                b = self.burn_in
                if (
                    b is not None
                    and self._stall[k] == b
                    and b < limit
                    and not (hist and rise >= self.burn_in_z * sd)
                ):
                    self._stall[k] = math.ceil(limit)  # no sign of a rise after the burn-in
                if self._stall[k] >= limit:
                    self._plateau[k] = p  # loses trust here: its plateau
            hist.append((p, var))
            del hist[:-horizon]
        self.step += 1
        return self.weights

    # -- logging and checkpoints ------------------------------------------------------------

    def metrics(self, prefix: str = "rewardagg/") -> dict[str, float]:
        """``{prefix + "weight/<reward>": w, prefix + "trusted/<reward>": 1.0 or 0.0,
        prefix + "pass_rate/<reward>": p}`` (the pass rate once the reward was seen): the
        weights the next batch gets. Keys are reward names, or column indices."""
        out: dict[str, float] = {}
        if self.n_rewards is None:
            return out
        for name, w, t, p, s1 in zip(
            self._names(), self.weights, self.trusted, self._p, self._s1, strict=True
        ):
            out[f"{prefix}weight/{name}"] = float(w)
            out[f"{prefix}trusted/{name}"] = 1.0 if t else 0.0
            if s1 > 0:
                out[f"{prefix}pass_rate/{name}"] = float(p)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs, in JSON types (``json.dumps`` works)."""
        return {
            "version": _STATE_VERSION,
            "n_rewards": self.n_rewards,
            "reward_names": None if self.reward_names is None else list(self.reward_names),
            "tau": self.tau,
            "beta": self.beta,
            "patience": self.patience,
            "z": self.z,
            "trial_cap": self.trial_cap,
            "patience_growth": self.patience_growth,
            "burn_in": self.burn_in,
            "burn_in_z": self.burn_in_z,
            "plateau_margin": self.plateau_margin,
            "step": self.step,
            "s1": list(getattr(self, "_s1", [])),
            "s2": list(getattr(self, "_s2", [])),
            "pass_rate": list(getattr(self, "_p", [])),
            "count": list(getattr(self, "_nbar", [])),
            "stall": list(getattr(self, "_stall", [])),
            "history": [[[p, v] for p, v in h] for h in getattr(self, "_history", [])],
            "proven": list(getattr(self, "_proven", [])),
            "retrust": list(getattr(self, "_retrust", [])),
            "plateau": list(getattr(self, "_plateau", [])),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also after a JSON round trip). Every entry is
        checked (type, length, range, finiteness) before anything changes; a bad one is a
        ``ValueError`` naming its key. The settings (``tau``, ``beta``, ``patience``, ``z``,
        ``reward_names``, ``n_rewards``) must match this controller's."""
        new = _parse_state(state, self)
        for key, value in new.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return (
            f"AdaptiveWeights(tau={self.tau}, beta={self.beta}, patience={self.patience}, "
            f"z={self.z}, trial_cap={self.trial_cap}, weights={self.weights}, step={self.step})"
        )


def _parse_state(state: Any, aw: AdaptiveWeights) -> dict[str, Any]:
    """The attributes a valid ``state`` sets on ``aw``; ``ValueError`` naming the bad key."""
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict must be a mapping; got {type(state).__name__}")
    expected = set(_STATE_KEYS)
    missing, extra = expected - set(state), set(state) - expected
    if missing or extra:
        raise ValueError(
            f"state_dict keys differ: missing {sorted(missing)}, unexpected {sorted(map(str, extra))}"
        )
    if state["version"] != _STATE_VERSION:
        raise ValueError(
            f"state_dict['version'] must be {_STATE_VERSION}; got {state['version']!r}"
        )
    for key in ("tau", "beta", "z"):
        value = state[key]
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not ok or float(value) != getattr(aw, key):
            raise ValueError(
                f"state_dict['{key}'] is {value!r}; this AdaptiveWeights has {key}="
                f"{getattr(aw, key)!r} (create it with the settings of the saved run)"
            )
    cap = state["trial_cap"]
    if cap != aw.trial_cap or isinstance(cap, bool):
        raise ValueError(
            f"state_dict['trial_cap'] is {cap!r}; this AdaptiveWeights has "
            f"trial_cap={aw.trial_cap!r}"
        )
    for key in _SETTINGS:
        value = state[key]
        if value != getattr(aw, key) or isinstance(value, bool):
            raise ValueError(
                f"state_dict['{key}'] is {value!r}; this AdaptiveWeights has "
                f"{key}={getattr(aw, key)!r} (create it with the settings of the saved run)"
            )
    if state["patience"] != aw.patience or isinstance(state["patience"], bool):
        raise ValueError(
            f"state_dict['patience'] is {state['patience']!r}; this AdaptiveWeights has "
            f"patience={aw.patience}"
        )
    names = state["reward_names"]
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(
            f"state_dict['reward_names'] must be null or a list of strings; got {names!r}"
        )
    if aw.reward_names is not None and names != list(aw.reward_names):
        raise ValueError(
            f"state_dict['reward_names'] is {names!r}; this AdaptiveWeights has {aw.reward_names}"
        )
    k = state["n_rewards"]
    if k is not None:
        k = _state_int(k, "n_rewards")
        if k == 0:
            raise ValueError("state_dict['n_rewards'] must be >= 1 or null; got 0")
    if aw.n_rewards is not None and k != aw.n_rewards:
        raise ValueError(
            f"state_dict['n_rewards'] is {k!r}; this AdaptiveWeights has {aw.n_rewards}"
        )
    if names is not None and k != len(names):
        raise ValueError(f"state_dict['n_rewards'] is {k!r} but reward_names has {len(names)}")
    step = _state_int(state["step"], "step")
    length = 0 if k is None else k
    s1 = _floats(state["s1"], "s1", length, low=0.0)
    s2 = _floats(state["s2"], "s2", length, low=0.0)
    p = _floats(state["pass_rate"], "pass_rate", length, low=0.0, high=1.0)
    nbar = _floats(state["count"], "count", length, low=0.0)
    stall = state["stall"]
    if not isinstance(stall, list) or len(stall) != length:
        raise ValueError(f"state_dict['stall'] must be a list of {length} integers; got {stall!r}")
    stall = [_state_int(c, "stall") for c in stall]
    proven = state["proven"]
    if (
        not isinstance(proven, list)
        or len(proven) != length
        or not all(isinstance(b, bool) for b in proven)
    ):
        raise ValueError(
            f"state_dict['proven'] must be a list of {length} booleans; got {proven!r}"
        )
    retrust = state["retrust"]
    if not isinstance(retrust, list) or len(retrust) != length:
        raise ValueError(
            f"state_dict['retrust'] must be a list of {length} integers; got {retrust!r}"
        )
    retrust = [_state_int(m, "retrust") for m in retrust]
    plateau = state["plateau"]
    if not isinstance(plateau, list) or len(plateau) != length:
        raise ValueError(
            f"state_dict['plateau'] must be a list of {length} numbers or nulls; got {plateau!r}"
        )
    plateau = [
        None if q is None else _floats([q], "plateau", 1, low=0.0, high=1.0)[0] for q in plateau
    ]
    history = state["history"]
    if not isinstance(history, list) or len(history) != length:
        raise ValueError(f"state_dict['history'] must be a list of {length} lists; got {history!r}")
    hist: list[list[tuple[float, float]]] = []
    for i, h in enumerate(history):
        key = f"history[{i}]"
        if not isinstance(h, list) or len(h) > aw.patience:
            raise ValueError(
                f"state_dict['{key}'] must be a list of at most patience={aw.patience} "
                f"[pass_rate, variance] pairs; got {h!r}"
            )
        pairs = []
        for pair in h:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValueError(
                    f"state_dict['{key}'] holds {pair!r}, not a [pass_rate, variance] pair"
                )
            pv = _floats(list(pair), key, 2, low=0.0)
            if pv[0] > 1.0 or pv[1] <= 0.0:
                raise ValueError(
                    f"state_dict['{key}'] holds {pair!r}: pass rate in [0, 1], variance > 0"
                )
            pairs.append((pv[0], pv[1]))
        hist.append(pairs)
    for i in range(length):
        seen = s1[i] > 0
        if seen and (s2[i] <= 0 or nbar[i] <= 0):
            raise ValueError(
                f"state_dict: reward {i} was seen ('s1' > 0) but its 's2' or 'count' is 0"
            )
        if not seen and (
            s2[i] != 0
            or p[i] != 0
            or nbar[i] != 0
            or stall[i] != 0
            or hist[i]
            or proven[i]
            or retrust[i]
            or plateau[i] is not None
        ):
            raise ValueError(f"state_dict: reward {i} was never seen (s1 = 0) but has state")
    out: dict[str, Any] = {"step": step, "n_rewards": k}
    if aw.reward_names is None and names is not None:
        out["reward_names"] = names
    if k is not None:
        out.update(
            _s1=s1,
            _s2=s2,
            _p=p,
            _nbar=nbar,
            _stall=stall,
            _history=hist,
            _proven=list(proven),
            _retrust=retrust,
            _plateau=plateau,
        )
    return out


def _cap_trials(w: list[float], members: list[int], trial: list[int], cap: float) -> None:
    """Water-filling in place: every reward of ``trial`` gets at most ``cap``; the excess
    goes to the other ``members`` in proportion to their weights (sum on members kept)."""
    if not any(w[i] > cap for i in trial):
        return  # nothing to cap: the weights stay exactly the uncapped rule's
    fixed: set[int] = set()
    total = float(len(members))
    while True:
        free = [i for i in members if i not in fixed]
        mass = math.fsum(w[i] for i in free)
        if not free or mass <= 0:
            return
        scale = (total - cap * len(fixed)) / mass
        over = [i for i in free if i in trial and w[i] * scale > cap]
        if not over:
            for i in free:
                w[i] *= scale
            for i in fixed:
                w[i] = cap
            return
        fixed.update(over)


def _state_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"state_dict['{key}'] must be an integer >= 0; got {value!r}")
    return int(value)


def _floats(
    values: Any, key: str, length: int, *, low: float, high: float = math.inf
) -> list[float]:
    if not isinstance(values, list) or len(values) != length:
        raise ValueError(f"state_dict['{key}'] must be a list of {length} numbers; got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"state_dict['{key}'] must hold finite numbers; got {v!r}")
        x = float(v)
        if not low <= x <= high:
            raise ValueError(f"state_dict['{key}'] must hold numbers in [{low}, {high}]; got {v!r}")
        out.append(x)
    return out


def _all_reduce(sums: np.ndarray, counts: np.ndarray, process_group: Any):
    import torch
    import torch.distributed as dist

    both = torch.from_numpy(np.concatenate([sums, counts]))
    if dist.get_backend(process_group) == "nccl":
        both = both.cuda()
    dist.all_reduce(both, group=process_group)
    total = both.cpu().numpy()
    return total[: sums.size], total[sums.size :]
