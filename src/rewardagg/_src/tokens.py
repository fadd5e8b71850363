"""Broadcast per-completion advantages to token level."""

from __future__ import annotations

from typing import Any

import numpy as np

from rewardagg._src.namespace import is_torch

__all__ = ["expand_to_tokens"]


def expand_to_tokens(adv: Any, response_mask: Any):
    r"""Token-level advantages for trainers that want ``(B, T)``.

    .. math:: A_{it} = A_i \, m_{it}

    Args:
        adv: ``(B,)`` per-completion advantages.
        response_mask: ``(B, T)`` with 1/True on response tokens.

    Returns:
        ``(B, T)`` in the library and device of ``response_mask`` when it is a tensor (else
        of ``adv``), in ``adv``'s float dtype.
    """
    a: Any
    m: Any
    if is_torch(adv) or is_torch(response_mask):
        import torch

        a = torch.as_tensor(adv).detach()
        m = torch.as_tensor(response_mask)
        if is_torch(response_mask):
            a = a.to(m.device)
        if not a.is_floating_point():
            a = a.to(torch.get_default_dtype())
        _check_token_shapes(a, m)
        return a[:, None] * m.to(a.dtype)
    a = np.asarray(adv)
    m = np.asarray(response_mask)
    if a.dtype.kind not in "biuf" or m.dtype.kind not in "biuf":
        raise TypeError(
            f"expand_to_tokens needs numeric adv and response_mask; got dtypes {a.dtype} and {m.dtype}"
        )
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    _check_token_shapes(a, m)
    return a[:, None] * m.astype(a.dtype)


def _check_token_shapes(a: Any, m: Any) -> None:
    if a.ndim != 1 or m.ndim != 2 or a.shape[0] != m.shape[0]:
        raise ValueError(
            f"expand_to_tokens needs adv of shape (B,) and response_mask of shape (B, T); "
            f"got {tuple(a.shape)} and {tuple(m.shape)}"
        )
