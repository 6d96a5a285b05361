"""The demo model's text encoder: a compact word-level transformer, trained with the model, then frozen.

No hub is reachable and no sentence encoder with bundled weights fits our install, so the demo model
learns its own: words of the caption grammar (plus the synonyms the adherence parser knows) get
embeddings; any other word maps to ``<unk>``, so an unknown word never fails — it is just ignored by
what the model learned. Training replaces a few words by ``<unk>`` so the model tolerates them.
Padding positions come out as zeros, as Wan's UMT5 embeddings do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from calibstudio.engine.models.demo import captions, scenes

PAD, UNK = "<pad>", "<unk>"
MAX_WORDS = 24
_WORD = re.compile(r"[a-z]+")


def grammar_vocabulary() -> list[str]:
    """Every word the caption grammar and the parser's synonym lists can produce, sorted (ids are stable)."""
    texts = [*scenes.PALETTE, *(w for words in captions.SHAPE_WORDS.values() for w in words),
             *(p for pair in captions.MOTION_PHRASES.values() for group in pair for p in group),
             *captions.BACKGROUND_PHRASES, *captions.SENTENCES, "grey violet aqua colour color background backdrop"]
    words = {w for text in texts for w in _WORD.findall(text.lower())} - {"t", "b", "s", "v", "p", "bg"}
    return [PAD, UNK, *sorted(words)]


def tokenize(texts: Sequence[str], vocab: Sequence[str], max_words: int = MAX_WORDS) -> torch.Tensor:
    """Word ids ``[B, max_words]`` (``<unk>`` for unknown words, ``<pad>`` = 0 after the last word)."""
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    for row, text in enumerate(texts):
        words = [index.get(w, unk) for w in _WORD.findall(str(text).lower())][:max_words]
        ids[row, : len(words)] = torch.tensor(words, dtype=torch.long)
    return ids


class WordEncoder(nn.Module):
    """Word embeddings, learned positions and a small pre-norm transformer: ids ``[B, L]`` → ``[B, L, dim]``."""

    def __init__(self, vocab_size: int, dim: int = 128, layers: int = 2, heads: int = 4,
                 max_words: int = MAX_WORDS) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(max_words, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == 0
        x = self.embed(ids) + self.position[: ids.shape[1]]
        # An all-padding row (the empty prompt) would make attention NaN; let it attend to itself.
        x = self.encoder(x, src_key_padding_mask=pad & ~pad.all(dim=1, keepdim=True))
        return self.norm(x).masked_fill(pad.unsqueeze(-1), 0.0)
