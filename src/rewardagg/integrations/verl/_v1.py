"""verl's v1 (TransferQueue) trainer: the reward components, from TransferQueue to the
advantage estimators.

verl 0.9's v1 trainer (``trainer.use_v1=True``, ``verl.trainer.ppo.v1.trainer_base``)
computes advantages in ``PPOTrainer._compute_advantage(batch, metrics)``: it reads a fixed
list of fields (``uid``, ``response_mask``, ``rm_scores``, log-probs, values) for the
batch's TransferQueue keys into a ``DataProto`` and passes it to
``compute_advantage_for_multi_trajectories(data, batch_keys, ...)``, which hands estimators
other than GRPO to ``compute_advantage`` whole. The reward components are not among those
fields: verl's agent loop stores each trajectory's ``compute_score`` dict under
``extra_fields["reward_extra_info"]`` (a colocated reward model writes each key as a field of
its own instead).

The adapter wraps both functions (see ``_adapter.install``): the wrapper of
``_compute_advantage`` reads the components named by ``algorithm.gdpo_reward_keys`` for the
batch's keys (:func:`fetch_components`) and keeps them in a context variable while verl's
method runs; the wrapper of ``compute_advantage_for_multi_trajectories`` adds them to
``data.non_tensor_batch`` when its ``batch_keys`` are that batch's (:func:`add_components`),
so ``compute_advantage`` passes them on as in the legacy trainer. Imports ``transfer_queue``
only when it reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "EXTRA_FIELDS",
    "REWARD_INFO",
    "TRAINER_MODULE",
    "UTILS_MODULE",
    "V1Batch",
    "add_components",
    "current_batch",
    "fetch_components",
    "object_column",
    "padding_as_missing",
    "reward_infos",
    "using_batch",
]

#: The v1 trainer's module and the module of ``compute_advantage_for_multi_trajectories``.
TRAINER_MODULE = "verl.trainer.ppo.v1.trainer_base"
UTILS_MODULE = "verl.trainer.ppo.v1.utils"
#: The TransferQueue field of each trajectory's extra fields, and its reward entry.
EXTRA_FIELDS = "extra_fields"
REWARD_INFO = "reward_extra_info"


@dataclass(frozen=True)
class V1Batch:
    """The reward components of one ``_compute_advantage`` batch, in its key order."""

    keys: tuple[str, ...]
    columns: Mapping[str, np.ndarray]


_BATCH: ContextVar[V1Batch | None] = ContextVar("rewardagg_verl_v1_batch", default=None)


def current_batch() -> V1Batch | None:
    """The components of the v1 batch being computed in this context (or ``None``)."""
    return _BATCH.get()


@contextlib.contextmanager
def using_batch(batch: V1Batch | None) -> Iterator[V1Batch | None]:
    """``with using_batch(batch): ...`` makes ``batch`` the :func:`current_batch`."""
    token = _BATCH.set(batch)
    try:
        yield batch
    finally:
        _BATCH.reset(token)


def _plain(value: Any) -> Any:
    """A TransferQueue value as Python: ``NonTensorData`` unwrapped, a 0-d tensor or
    array as its number."""
    if not isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        value = getattr(value, "data", value)
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)) and value.ndim == 0:
        return value.item()
    return value


def reward_infos(extra_fields: Iterable[Any]) -> list[Mapping[str, Any]]:
    """Each trajectory's ``reward_extra_info`` dict from its ``extra_fields`` (``{}`` when
    it has none)."""
    out: list[Mapping[str, Any]] = []
    for value in extra_fields:
        fields = _plain(value)
        info = fields.get(REWARD_INFO) if isinstance(fields, Mapping) else None
        out.append(info if isinstance(info, Mapping) else {})
    return out


def object_column(values: Sequence[Any]) -> np.ndarray:
    """A ``(n,)`` object array of the values (``None`` kept: a missing reward), the form
    verl's legacy trainer gives ``reward_extra_info`` entries with a ``None``."""
    column = np.empty(len(values), dtype=object)
    column[:] = [_plain(v) for v in values]
    return column


def _fields(tq_keys: list[str], partition_id: str, names: list[str]) -> Any:
    import transfer_queue as tq

    return tq.kv_batch_get(keys=tq_keys, partition_id=partition_id, select_fields=names)


def fetch_components(
    reward_keys: Sequence[str], tq_keys: Sequence[str], partition_id: str
) -> dict[str, np.ndarray]:
    """The reward components of the trajectories ``tq_keys``, one ``(n,)`` object array per
    key, from TransferQueue.

    A key is read from each trajectory's ``extra_fields["reward_extra_info"]`` (verl's agent
    loop; a trajectory without it has a missing reward, ``None``), else from a field of that
    name (a colocated reward model's ``reward_extra_keys``).

    Raises:
        KeyError: a key found in neither place, with what was found.
    """
    keys = list(tq_keys)
    data = _fields(keys, partition_id, [EXTRA_FIELDS])
    infos = reward_infos(data[EXTRA_FIELDS]) if EXTRA_FIELDS in data.keys() else []
    columns = {
        k: object_column([info.get(k) for info in infos])
        for k in reward_keys
        if any(k in info for info in infos)
    }
    for k in [k for k in reward_keys if k not in columns]:
        field = _fields(keys, partition_id, [k])
        if k in field.keys():
            columns[k] = object_column(list(field[k]))
    missing = [k for k in reward_keys if k not in columns]
    if missing:
        seen = sorted({name for info in infos for name in info})
        raise KeyError(
            f"rewardagg (verl v1 trainer): reward key(s) {missing} of algorithm.gdpo_reward_keys "
            f"are in neither the trajectories' extra_fields['{REWARD_INFO}'] (keys there: "
            f"{seen}) nor TransferQueue fields of partition {partition_id!r}. Use "
            "reward.reward_manager.name=gdpo and make compute_score return a dict with these keys."
        )
    return columns


def padding_as_missing(
    columns: Mapping[str, np.ndarray], tags: Sequence[Mapping[str, Any]] | None
) -> dict[str, np.ndarray]:
    """The components with ``None`` (missing) on verl's synthetic padding rows.

    The v1 trainer pads a batch to a multiple of its data-parallel size with copies of its
    first trajectory (``is_padding`` in their tags, response mask all zero, extra fields
    copied): they carry no reward, so they must not enter the group statistics, the
    constraint means or the logged reward curves.
    """
    padding = [bool(tag.get("is_padding", False)) for tag in tags or ()]
    if not any(padding):
        return dict(columns)
    out = {}
    for key, column in columns.items():
        column = column.copy()
        column[np.asarray(padding, dtype=bool)] = None
        out[key] = column
    return out


def add_components(data: Any, columns: Mapping[str, np.ndarray], *, for_gdpo: bool) -> None:
    """Put the components into ``data.non_tensor_batch`` (keys already there are kept).

    With ``for_gdpo`` also give the batch what verl's own ``gdpo`` estimator reads to find
    each row's last response token, when the v1 batch lacks it: ``prompts`` (one column)
    and ``attention_mask`` (that column, then ``response_mask``). verl's ``gdpo`` places
    each component on that token and sums over the tokens, so any token of the row gives
    the same advantage; rewardagg's estimators do not read them.
    """
    for key, column in columns.items():
        data.non_tensor_batch.setdefault(key, column)
    batch = data.batch
    if not for_gdpo or "prompts" in batch.keys() or "attention_mask" in batch.keys():
        return
    mask = batch["response_mask"]
    first = torch.ones(mask.shape[0], 1, dtype=torch.long, device=mask.device)
    batch["prompts"] = torch.zeros_like(first)
    batch["attention_mask"] = torch.cat([first, mask.long()], dim=1)
