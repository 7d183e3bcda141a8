"""Kernels, each module one op: its Triton or CUDA kernel beside its PyTorch reference, behind one
availability check (backends.py). Nothing here communicates: the tensor-parallel autograd
Functions that use these kernels live in parallel/.

    rms_norm.py         RMSNorm with the residual add fused in (Triton; memory-lean Function)
    swiglu.py           SwiGLU fused with the down projection (Triton; memory-lean Function)
    qkv_rotary.py       the fused QKV output split into rotated q, k and v (Triton)
    wgrad.py            weight-gradient GEMM accumulating into fp32 main_grad (CUDA extension)
    logprob_kernels.py  the log-prob head's row statistics, dlogits, segment sum (CUDA, Triton)
    adamw.py            AdamW over flat fp32 buffers, with the update's norm (Triton)
    backends.py         which backends are present; MEGATRON_REDI_TRITON=0 turns Triton off
"""
