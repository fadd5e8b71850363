"""``--rewardagg.drop FLAG``: drop a flag given earlier on the launcher's command line.

The example's ``run.sh`` puts the flags of ``args.txt`` first and the user's after them.
argparse lets a later value win, but it cannot unset a flag (a ``store_true`` switch such
as ``--train.colocate_all``, or a method parameter that another method does not take).
``--rewardagg.drop FLAG`` removes every earlier occurrence of ``FLAG`` (``FLAG VALUE...``
or ``FLAG=VALUE``) from the command line before OpenRLHF's parser sees it; the flag may be
given again after the drop.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DROP", "drop_flags"]

DROP = "--rewardagg.drop"


def _is_flag(word: str) -> bool:
    return word.startswith("--")


def drop_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--rewardagg.drop FLAG`` and the occurrences of ``FLAG`` before
    it removed (a flag's values: the words after it up to the next ``--`` word).

    Raises:
        ValueError: ``--rewardagg.drop`` without a flag after it.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word != DROP and not word.startswith(DROP + "="):
            out.append(word)
            i += 1
            continue
        if word.startswith(DROP + "="):
            flag, i = word.split("=", 1)[1], i + 1
        elif i + 1 < len(argv) and _is_flag(argv[i + 1]):
            flag, i = argv[i + 1], i + 2
        else:
            raise ValueError(f"{DROP} expects a flag (such as {DROP} --rewardagg.kappa)")
        if not _is_flag(flag):
            raise ValueError(f"{DROP} expects a flag starting with '--'; got {flag!r}")
        kept: list[str] = []
        j = 0
        while j < len(out):
            if out[j] == flag or out[j].startswith(flag + "="):
                j += 1
                if out[j - 1] == flag:
                    while j < len(out) and not _is_flag(out[j]):
                        j += 1
                continue
            kept.append(out[j])
            j += 1
        out = kept
    return out
