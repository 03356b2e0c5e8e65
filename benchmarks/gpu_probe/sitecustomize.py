"""Imported by every Python process that benchmarks/gpu_dpo.py starts (this folder is put on PYTHONPATH).

It leaves scaled_dot_product_attention only its FlashAttention kernel, so a run that ever attends with a padding
mask fails instead of quietly using another kernel, and writes the process's peak GPU memory at exit.
"""

import atexit
import os

import torch

if torch.cuda.is_available():
    torch.backends.cuda.enable_math_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    torch.backends.cuda.enable_cudnn_sdp(False)
    _peak_file = os.environ.get("RLHFX_PEAK_MEMORY_FILE")
    if _peak_file:
        atexit.register(lambda: open(_peak_file, "w").write(str(torch.cuda.max_memory_allocated())))
