"""Creates the tiny random-weight Llama the real-engine e2e serves (no model hub is needed).

Heads are at least 64 wide because vLLM's CPU attention kernels reject smaller ones. The default
size (hidden 512, 4 layers, 4 heads of 128, 2 K,V heads, FFN 1536) makes a 1.5K-token prefill cost
seconds on a CPU, far above the HTTP and scheduling overheads, so K,V reuse is measurable; `--hidden 128 --layers 2 --heads 2
--kv-heads 1` is the smallest that serves. The tokenizer is a byte-level BPE trained on a few
lines, with a chat template, so `/v1/chat/completions` works.
Run with the e2e venv's python: make_tiny_model.py OUT_DIR [--hidden N --layers N ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Symphony moves a session's K,V cache ahead of its next turn.",
    "User: how do I sort a list in Python? Assistant: use sorted(items) or items.sort().",
    "Multi-turn chat sessions resend the whole conversation every turn.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
] * 20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Creates a tiny random-weight Llama for the vLLM e2e.")
    p.add_argument("out")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=1536)
    args = p.parse_args(argv)
    if args.hidden % args.heads or args.hidden // args.heads not in (64, 128):
        p.error("hidden / heads must be 64 or 128 (what vLLM's CPU attention kernels accept)")
    return make(args)


def make(args: argparse.Namespace) -> int:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(args.out)
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        cfg = json.loads((path / "config.json").read_text())
        if (cfg["hidden_size"], cfg["num_hidden_layers"]) == (args.hidden, args.layers):
            print(f"tiny model already at {path}")
            return 0
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin|>", eos_token="<|end|>", pad_token="<|pad|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path)
    print(f"tiny model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
