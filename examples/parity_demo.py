"""Forward parity at TP=2 with sequence parallelism against Hugging Face, on CPU.

    torchrun --nproc-per-node 2 examples/parity_demo.py

Builds a tiny random Qwen2 checkpoint, loads it sharded over 2 ranks, runs a packed micro-batch of
three sequences, and compares the gathered logits with transformers run on each sequence alone.
"""

import tempfile

import torch
import torch.distributed as dist

from megatron_redi.fixtures import make_tiny_hf_checkpoint
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize


def main():
    torch.set_num_threads(1)
    parallel = initialize(tensor_parallel_size=2, sequence_parallel=True)
    path = [tempfile.mkdtemp(prefix="tiny_qwen2_") if parallel.rank == 0 else None]
    dist.broadcast_object_list(path)
    if parallel.rank == 0:
        make_tiny_hf_checkpoint(path[0], num_kv_heads=1)  # TP=2 > 1 KV head: replicated KV
    dist.barrier()
    model = from_pretrained(path[0], parallel)

    lengths = [9, 23, 16]
    ids = torch.randint(0, model.cfg.vocab_size, (sum(lengths),), generator=torch.Generator().manual_seed(0))
    pos = torch.cat([torch.arange(n) for n in lengths])
    offsets = [0, 9, 32, 48]
    with torch.no_grad():
        logits = model(ids, pos, offsets, return_logits=True)
    if parallel.rank == 0:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(path[0], dtype=torch.float32).eval()
        with torch.no_grad():
            ref = torch.cat([hf(ids[a:b][None]).logits[0] for a, b in zip(offsets, offsets[1:])])
        err = (logits - ref).abs().max().item()
        print(f"TP=2 + SP, {model.cfg.num_parameters():,} parameters, sequences {lengths}: "
              f"max |logit - HF| = {err:.2e} ({'OK' if err < 1e-4 else 'MISMATCH'})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
