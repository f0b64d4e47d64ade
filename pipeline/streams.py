"""The token-stream format: what the tokens stage writes (`<dir>/<split>/` shards and their manifest, or the single
`<split>.bin` file of an older version) read as one flat array of token ids. Here, not in the stage, so the
pretraining sampler (pipeline/mixture.py) and the pretraining stage read streams without importing the stage that
writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import read_json


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


class ShardedStream:
    """A split's shards read as one flat array: `len()` and `[start:stop]` as on a memory map."""

    def __init__(self, directory: Path, dtype: np.dtype):
        manifest = read_json(Path(directory) / "manifest.json")
        self.parts = [np.memmap(Path(directory) / s["file"], dtype=dtype, mode="r", shape=(s["tokens"],))
                      for s in manifest["shards"] if s["tokens"] > 0]
        self.ends = np.cumsum([len(p) for p in self.parts], dtype=np.int64)
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a token stream is read by contiguous slices")
        start, stop, _ = key.indices(len(self))
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        out, pos = [], start
        i = int(np.searchsorted(self.ends, start, side="right"))
        while pos < stop:
            begin = int(self.ends[i - 1]) if i else 0
            take = min(stop, int(self.ends[i])) - pos
            out.append(self.parts[i][pos - begin: pos - begin + take])
            pos += take
            i += 1
        return out[0] if len(out) == 1 else np.concatenate(out)


def open_stream(path: Path, vocab_size: int) -> np.ndarray | ShardedStream:
    """`<dir>/<split>.bin` of a tokens directory: the sharded stream in `<dir>/<split>/`, or the single file an
    older version of this stage wrote."""
    path, dtype = Path(path), token_dtype(vocab_size)
    sharded = path.with_suffix("")
    if (sharded / "manifest.json").is_file():
        return ShardedStream(sharded, dtype)
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")
