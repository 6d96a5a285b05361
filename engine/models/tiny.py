"""A tiny random Wan pipeline built offline (no hub): for tests, smoke runs and the engine's self-check.

Same classes as Wan 2.1 (``WanTransformer3DModel``, ``AutoencoderKLWan``, UMT5, a flow-matching
scheduler), with a word-level tokenizer built in memory, so every engine code path runs in
seconds on a CPU. Its clips are noise-like: it is untrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = ("a an the red green blue yellow white black orange purple circle square triangle ball box moves "
         "left right up down grows shrinks bounces on over background of").split()


def tiny_wan_pipeline(seed: int = 0, layers: int = 2, heads: int = 2, sharpness: float = 6.0) -> Any:
    """A ``WanPipeline`` with random weights: 2 layers x 2 heads of 16 dims by default.

    ``sharpness`` scales the query/key norms of self-attention so that attention is peaked, as in a
    trained model, rather than near uniform; calibrated masks then really drop blocks.
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8))
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=16,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64,
                                        num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    with torch.no_grad():
        for block in transformer.blocks:
            block.attn1.norm_q.weight.mul_(sharpness)
            block.attn1.norm_k.weight.mul_(sharpness)
    for module in (text_encoder, transformer, vae):
        module.eval()  # as from_pretrained leaves them: no dropout
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_wan(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline as a local diffusers folder (what ``load_wan`` reads)."""
    folder = Path(folder)
    tiny_wan_pipeline(seed).save_pretrained(folder)
    return folder
