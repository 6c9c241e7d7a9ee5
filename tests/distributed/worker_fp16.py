"""Worker of test_fp16: `vlbert-fast ARGS` with DeepSpeed's fp16 refusal on this CPU lifted.

DeepSpeed's CPU accelerator reports fp16 unsupported unless oneDNN has fp16 kernels for the CPU (this machine's
AVX-512 has none), and then refuses to start. torch runs fp16 on the CPU anyway (slowly), which is all the dynamic
loss scale needs: its overflow checks, skipped steps and scale changes are DeepSpeed's own code, run for real.
"""

import sys

from deepspeed.accelerator import get_accelerator

from vlbert_fast.cli import main

get_accelerator().is_fp16_supported = lambda: True
sys.exit(main(sys.argv[1:]))
