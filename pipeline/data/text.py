"""Text: tokenized once by the backbone's tokenizer and cached on disk; batches trimmed to their longest row."""

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.artifacts import atomic_write

log = logging.getLogger(__name__)


def _tokenizer_id(tokenizer) -> str:
    return f"{tokenizer.name_or_path}|{type(tokenizer).__name__}|{len(tokenizer)}"


def tokenize(texts: list[str], tokenizer, max_length: int, cache_dir: Path | None) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask (padded to max_length), cached by tokenizer, max_length and texts (unless
    `cache_dir` is None)."""
    if cache_dir is None:
        return _encode(texts, tokenizer, max_length)
    h = hashlib.sha256(f"{_tokenizer_id(tokenizer)}|{max_length}".encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    path = Path(cache_dir) / f"tokens-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        log.info("tokens: cache hit %s", path)
        return torch.load(path, weights_only=True)
    tokens = _encode(texts, tokenizer, max_length)
    atomic_write(path, lambda tmp: torch.save(tokens, tmp))
    log.info("tokens: %d texts -> %s", len(texts), path)
    return tokens


def _encode(texts: list[str], tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, padding="max_length", return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class TextDataset(Dataset):
    """Rows of tokens (+ optional tabular features and target) as batch dicts."""

    def __init__(
        self,
        tokens: dict[str, torch.Tensor],
        rows: np.ndarray,
        tab: np.ndarray | None = None,
        y: np.ndarray | None = None,
    ):
        self.tokens, self.rows, self.tab, self.y = tokens, rows, tab, y

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        r = self.rows[i]
        item = {"input_ids": self.tokens["input_ids"][r], "attention_mask": self.tokens["attention_mask"][r]}
        if self.tab is not None:
            item["tab"] = torch.from_numpy(self.tab[i])
        if self.y is not None:
            item["y"] = torch.tensor(self.y[i])
        return item


def trim_collate(items: list[dict]) -> dict:
    """Stack a batch and cut padding beyond its longest text (short batches run much faster)."""
    batch = torch.utils.data.default_collate(items)
    if "attention_mask" in batch:
        n = int(batch["attention_mask"].sum(1).max())
        batch["input_ids"], batch["attention_mask"] = (
            batch["input_ids"][:, :n],
            batch["attention_mask"][:, :n],
        )
    return batch
