"""A word-level tokenizer over the task's vocabulary, built locally with ``tokenizers``.

Every whitespace-separated word of a request or a call (:func:`rewardagg.toolcall.task.
vocabulary`, plus the demonstrations' chatter) is one token; decoding joins the tokens with
single spaces, so a decoded completion splits back into the same words. Three special
tokens: ``<pad>``, ``<eos>`` (the end of a completion) and ``<unk>``. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["EOS", "PAD", "UNK", "build_tokenizer"]

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_tokenizer(words: Sequence[str]) -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` whose vocabulary is the specials then
    ``words`` (sorted, without repeats), in that order, so the ids are reproducible."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, EOS, UNK]
    vocab = {w: i for i, w in enumerate([*specials, *sorted(set(words) - set(specials))])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="\x00", cleanup=False)  # join with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK
    )
    tokenizer.padding_side = "left"
    return tokenizer
