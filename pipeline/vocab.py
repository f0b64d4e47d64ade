"""The shared vocabulary as every stage after the tokenizer reads it: the saved tokenizer (the tokenizer stage's
output, and the copy every checkpoint carries) and its sentinel ids. Here, not in the stage that trains it, so
the tokens, pretraining, finetuning and evaluation stages read it without importing that stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def sentinel_ids(tokenizer, num_sentinels: int = 100) -> np.ndarray:
    """ids of <extra_id_0>, <extra_id_1>, ... in that order."""
    return np.array(tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(num_sentinels)]), dtype=np.int64)
