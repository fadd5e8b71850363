"""The toy environment of ``rewardagg demo``: a format constraint against verbosity rewards.

The environment is deliberately tiny, so that every number in the demo can be checked by
hand and the expected rewards of a policy have a closed form.

Responses
    A response to a prompt is a sequence of ``length`` tokens (default ``L = 6``), each
    either ``<end>`` (token 0, a format marker such as a closing tag) or ``word``
    (token 1, content).

Policy
    One table of logits per prompt and position, ``theta[p, l, v]``; each position is an
    independent softmax over the two tokens, so ``pi(x | p) = prod_l softmax(theta[p, l])[x_l]``.
    Every position starts with the same probability ``q_p`` of ``<end>``, chosen so that
    the constraint below is met with probability ``q_p ** c = s_p`` at the start. The
    prompts differ only in this start: ``s_p = initial_satisfaction * 2 ** t_p`` with
    ``t_p`` evenly spaced in ``[-1, 1]`` (capped at 0.95), so some prompts start harder
    than others.

Rewards (``K = n_rewards`` columns, 2 <= K <= 17)
    - reward 0, ``format`` (the hard constraint): 1.0 when the last ``c`` positions
      (``c = constraint_length``, default 2) are all ``<end>``, else 0.0. Noise-free.
    - rewards 1 .. K-1, ``verbose_j`` (easy, high-variance objectives in the style of
      verbosity or rubric items): the number of ``word`` tokens in window ``j`` plus
      Gaussian noise of standard deviation ``noise`` (default 1.0; a noisy judge). The
      windows are distinct sets of consecutive positions (wrapping around), taken in
      order of width, ``w``, ``w - 1``, ``w + 1``, ``w - 2``, ... (``w = window``, default 3),
      and within a width by start position 0, 1, ..., L - 1 (:func:`distinct_windows`).
      Windows that overlap the last ``c`` positions conflict with the constraint; the
      others do not.

    With the defaults (K = 4, L = 6, c = 2, w = 3) the windows are {0,1,2}, {1,2,3} and
    {2,3,4}: the format wants positions 4 and 5 to be ``<end>``; only ``verbose_3`` wants
    ``word`` at position 4, and no reward but the format cares about position 5. Under a
    raw sum of rewards, giving up the constraint is the better deal (it is worth 1, the
    word it costs is worth 1 plus noise); a constraint in the sense of this library
    should win anyway. With K = 17 the 16 windows are the six of width 3, the six of width
    2 and the first four of width 4; 10 of them cover position 4 or 5, so meeting the
    format costs one or two words in each of those 10 (the six that do not cover them
    are free).

Expected (noise-free) rewards of a policy, used for the learning curves:
``E[format] = prod_{l >= L-c} pi_l(<end>)`` and ``E[verbose_j] = sum_{l in W_j} pi_l(word)``.
Normalised rewards divide ``verbose_j`` by its window's width so that every reward lies
in [0, 1];
the *worst reward* of a prompt is the smallest normalised expected reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["END", "MAX_REWARDS", "WORD", "ConstraintEnv", "distinct_windows"]

END = 0
WORD = 1
MAX_REWARDS = 17


@dataclass(frozen=True)
class ConstraintEnv:
    """Rule-based rewards for ``length``-token responses; see the module docstring.

    Args:
        n_rewards: ``K``, the number of reward columns: one format constraint plus
            ``K - 1`` verbosity rewards, 2 <= K <= 17.
        n_prompts: number of prompts, each with its own table of logits.
        length: ``L``, tokens per response.
        constraint_length: ``c``, how many final positions must be ``<end>``.
        initial_satisfaction: geometric mean over prompts of the probability that the
            constraint is met at the start (a small value is a hard constraint).
        window: ``w``, the width of the first windows (:func:`distinct_windows`).
        noise: standard deviation of the Gaussian noise added to each verbosity reward.
    """

    n_rewards: int = 4
    n_prompts: int = 4
    length: int = 6
    constraint_length: int = 2
    initial_satisfaction: float = 0.05
    window: int = 3
    noise: float = 1.0

    def __post_init__(self) -> None:
        if not 2 <= self.n_rewards <= MAX_REWARDS:
            raise ValueError(f"n_rewards must be in [2, {MAX_REWARDS}], got {self.n_rewards}")
        if self.n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {self.n_prompts}")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if not 1 <= self.constraint_length <= self.length:
            raise ValueError(
                f"constraint_length must be in [1, length={self.length}], "
                f"got {self.constraint_length}"
            )
        if not 1 <= self.window <= self.length:
            raise ValueError(f"window must be in [1, length={self.length}], got {self.window}")
        most = self.length * (self.length - 1) + 1
        if self.n_rewards - 1 > most:
            raise ValueError(
                f"n_rewards={self.n_rewards} needs {self.n_rewards - 1} distinct windows; "
                f"length={self.length} has {most}"
            )
        if not 0.0 < self.initial_satisfaction < 1.0:
            raise ValueError(
                f"initial_satisfaction must be in (0, 1), got {self.initial_satisfaction}"
            )
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    # ------------------------------------------------------------------ structure
    @property
    def reward_names(self) -> tuple[str, ...]:
        """``("format", "verbose_1", ..., "verbose_{K-1}")``."""
        return ("format", *tuple(f"verbose_{j}" for j in range(1, self.n_rewards)))

    def windows(self) -> np.ndarray:
        """Boolean ``(K - 1, L)`` matrix: row ``j - 1`` marks the positions of ``verbose_j``."""
        return distinct_windows(self.length, self.window, self.n_rewards - 1)

    def widths(self) -> np.ndarray:
        """``(K - 1,)`` number of positions in each window."""
        return self.windows().sum(axis=1)

    def initial_satisfaction_per_prompt(self) -> np.ndarray:
        """``(P,)`` start probability ``s_p`` of meeting the constraint, per prompt."""
        t = np.linspace(-1.0, 1.0, self.n_prompts) if self.n_prompts > 1 else np.zeros(1)
        return np.minimum(self.initial_satisfaction * 2.0**t, 0.95)

    def initial_logits(self) -> np.ndarray:
        """``(P, L, 2)`` logits with ``P(<end>) = s_p ** (1/c)`` at every position."""
        q = self.initial_satisfaction_per_prompt() ** (1.0 / self.constraint_length)
        theta = np.zeros((self.n_prompts, self.length, 2))
        theta[:, :, END] = np.log(q / (1.0 - q))[:, None]
        return theta

    # ------------------------------------------------------------------ rewards
    def format_reward(self, tokens: np.ndarray) -> np.ndarray:
        """1.0 where the last ``c`` tokens are all ``<end>``; ``tokens`` is ``(..., L)``."""
        tokens = np.asarray(tokens)
        return np.all(tokens[..., self.length - self.constraint_length :] == END, axis=-1).astype(
            np.float64
        )

    def verbosity_counts(self, tokens: np.ndarray) -> np.ndarray:
        """Noise-free verbosity rewards: ``word`` count per window, ``(..., K - 1)``."""
        words = (np.asarray(tokens) == WORD).astype(np.float64)
        return words @ self.windows().T.astype(np.float64)

    def rewards(self, tokens: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """All ``K`` rewards of responses ``tokens`` ``(..., L)``, shaped ``(..., K)``.

        ``noise`` holds standard-normal draws shaped ``(..., K - 1)`` (scaled here by
        ``self.noise``); ``None`` gives the noise-free rewards.
        """
        verbose = self.verbosity_counts(tokens)
        if noise is not None:
            verbose = verbose + self.noise * np.asarray(noise, dtype=np.float64)
        fmt = self.format_reward(tokens)
        return np.concatenate([fmt[..., None], verbose], axis=-1)

    # ------------------------------------------------------------------ policy
    def expected_rewards(self, theta: np.ndarray) -> np.ndarray:
        """Exact noise-free expected rewards of the policy ``theta`` ``(..., P, L, 2)``.

        Returns ``(..., P, K)``: column 0 is the probability of meeting the constraint,
        column ``j`` the expected ``word`` count in window ``j``.
        """
        p_end = end_probability(theta)
        fmt = np.prod(p_end[..., self.length - self.constraint_length :], axis=-1)
        verbose = (1.0 - p_end) @ self.windows().T.astype(np.float64)
        return np.concatenate([fmt[..., None], verbose], axis=-1)

    def normalised(self, rewards: np.ndarray) -> np.ndarray:
        """Scale noise-free rewards ``(..., K)`` to [0, 1]: verbosity divided by its width."""
        scale = np.ones(self.n_rewards)
        scale[1:] = self.widths()
        return np.asarray(rewards, dtype=np.float64) / scale


def end_probability(theta: np.ndarray) -> np.ndarray:
    """``pi(<end>)`` per position for logits ``theta`` ``(..., 2)``: ``sigmoid(t0 - t1)``."""
    d = theta[..., END] - theta[..., WORD]
    return 0.5 * (1.0 + np.tanh(0.5 * d))


def _widths(length: int, window: int) -> list[int]:
    """``window``, ``window - 1``, ``window + 1``, ``window - 2``, ... within [1, length]."""
    out = [window]
    for d in range(1, length):
        out += [w for w in (window - d, window + d) if 1 <= w <= length]
    return out


def distinct_windows(length: int, window: int, count: int) -> np.ndarray:
    """``count`` distinct cyclic windows of consecutive positions, ``(count, length)``
    boolean: widths in the order ``window, window - 1, window + 1, ...``, and for each
    width the windows starting at 0, 1, ..., ``length - 1`` (one window of width
    ``length``).

    >>> distinct_windows(4, 2, 6).astype(int)
    array([[1, 1, 0, 0],
           [0, 1, 1, 0],
           [0, 0, 1, 1],
           [1, 0, 0, 1],
           [1, 0, 0, 0],
           [0, 1, 0, 0]])
    """
    rows = []
    for w in _widths(length, window):
        for start in range(1 if w == length else length):
            row = np.zeros(length, dtype=bool)
            row[(start + np.arange(w)) % length] = True
            rows.append(row)
    if count > len(rows):
        raise ValueError(f"only {len(rows)} distinct windows in {length} positions, not {count}")
    return np.array(rows[:count], dtype=bool).reshape(count, length)
