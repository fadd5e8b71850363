"""A Qwen2-architecture causal language model built from a config (nothing downloaded).

The sizes (:data:`SIZES`) share Qwen2's layout (grouped-query attention, SwiGLU MLP, RMS
norm, rotary positions, tied embeddings); ``tiny`` trains on two CPU cores in minutes, the
larger ones are for a GPU (``rewardagg toolcall --model-size base --device cuda``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SIZES", "build_model"]

#: name -> (hidden size, layers, attention heads, key/value heads, MLP width)
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (64, 2, 4, 2, 128),
    "small": (128, 4, 4, 2, 384),
    "base": (256, 6, 8, 4, 768),
    "large": (512, 8, 8, 4, 1536),
}


def build_model(tokenizer: Any, size: str = "tiny", *, seed: int = 0) -> Any:
    """A randomly initialised ``Qwen2ForCausalLM`` of ``size`` (:data:`SIZES`) over
    ``tokenizer``'s vocabulary; the weights depend on ``seed`` only."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hidden, layers, heads, kv_heads, mlp = SIZES[size]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
