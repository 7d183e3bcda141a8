"""Tiny models and a tiny tokenizer, made locally, so that no test or demo needs a download.

- ``make_tiny_hf_checkpoint``: a random Qwen2, Llama-3 or Qwen3 checkpoint (tied or untied) written
  by ``transformers`` itself, so its layout is the real one.
- ``make_tiny_tokenizer``: a byte-level BPE trained with ``tokenizers`` on arithmetic text and saved
  as an HF fast tokenizer with a Qwen2.5-Math-style chat template.
"""

from __future__ import annotations

import os

import torch

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# Qwen2.5-Math's layout: a system turn (defaulting to the prompt above), then <|im_start|>role\n
# content<|im_end|>\n per message, and an open assistant turn on add_generation_prompt.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT.replace("\\", "\\\\") + "<|im_end|>\\n' }}"
    "{%- set rest = messages -%}"
    "{%- endif -%}"
    "{%- for m in rest -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def _training_text():
    """A corpus covering what the synthetic traces and prompts contain."""
    words = ("Please reason step by step, and put your final answer within \\boxed{}. "
             "Compute the sum of the numbers. What is the value of the expression? "
             "First add then subtract carry so the answer is Let us check the result again "
             "system user assistant Therefore, we get = + - * / ( ) ; : . , ")
    lines = [words]
    for a in range(0, 200, 7):
        for b in range(0, 200, 13):
            lines.append(f"{a}+{b}={a + b}; {a}*{b}={a * b}; {a}-{b}={a - b}; \\boxed{{{a + b}}}")
    return lines


def make_tiny_tokenizer(path: str, vocab_size: int = 384, texts=None):
    """Train a byte-level BPE on ``texts`` (default: a small arithmetic corpus) and save it, with
    the chat template, as an HF tokenizer in ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # digits one by one, as Qwen2's tokenizer splits them, then byte-level BPE
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts if texts is not None else _training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:])
    fast.chat_template = CHAT_TEMPLATE
    os.makedirs(path, exist_ok=True)
    fast.save_pretrained(path)
    return fast


def make_tiny_hf_checkpoint(path: str, arch: str = "qwen2", tie_word_embeddings: bool = True,
                            num_heads: int = 4, num_kv_heads: int = 2, hidden_size: int = 64,
                            intermediate_size: int = 96, num_layers: int = 2, vocab_size: int = 384,
                            rope_theta: float = 10000.0, seed: int = 0,
                            dtype: torch.dtype = torch.float32, max_shard_size: str | None = None) -> str:
    """Write a random HF checkpoint (``arch`` qwen2, llama3 or qwen3) to ``path`` and return the path.
    Qwen3's heads are 24 wide, so that heads x head_dim (96) is not the hidden size, as in Qwen3-4B.

    Every parameter is drawn at a scale that makes logits and attention patterns non-trivial
    (HF's own init leaves biases at zero and logits near uniform, which would test little).
    """
    from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                              Qwen3ForCausalLM)

    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  num_key_value_heads=num_kv_heads, tie_word_embeddings=tie_word_embeddings,
                  rms_norm_eps=1e-6, max_position_embeddings=512, bos_token_id=0, eos_token_id=0)
    if arch == "qwen2":
        config, cls = Qwen2Config(rope_theta=rope_theta, **common), Qwen2ForCausalLM
    elif arch == "llama3":
        scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        config = LlamaConfig(rope_theta=500000.0, rope_scaling=scaling, **common)
        cls = LlamaForCausalLM
    elif arch == "qwen3":
        config, cls = Qwen3Config(rope_theta=rope_theta, head_dim=24, **common), Qwen3ForCausalLM
    else:
        raise ValueError(f"arch must be qwen2, llama3 or qwen3, got {arch!r}")
    gen = torch.Generator().manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.15 * noise)
    model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return path


def write_random_hf_checkpoint(path: str, cfg, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> str:
    """A random HF checkpoint of any size (e.g. a preset's shapes), written tensor by tensor so
    that making it needs memory near one tensor. No transformers involved: config.json comes from
    ``cfg.to_hf_dict()``."""
    import json

    from .checkpoint.hf_mapping import hf_shapes, name_table
    from .checkpoint.safetensors_io import StreamingWriter

    shapes = hf_shapes(cfg)
    names = [hf for entry in name_table(cfg) for hf in entry.hf]
    os.makedirs(path, exist_ok=True)
    writer = StreamingWriter(os.path.join(path, "model.safetensors"), [(n, dtype, shapes[n]) for n in names])
    gen = torch.Generator().manual_seed(seed)
    for name in names:  # HF's initialisation: N(0, 0.02) matrices, unit norms, zero biases
        if "norm" in name:
            tensor = torch.ones(shapes[name])
        elif name.endswith("bias"):
            tensor = torch.zeros(shapes[name])
        else:
            tensor = torch.randn(shapes[name], generator=gen) * 0.02
        writer.write(name, tensor.to(dtype))
    writer.close()
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg.to_hf_dict(), f, indent=2)
    return path
