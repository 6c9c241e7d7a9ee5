// Philox-4x32-10 uniform draws on the CPU, bitwise equal to Triton's tl.rand (declared here, defined in
// philox_cpu.cpp; the checks and the allocation live in vlbert_fast_api.cpp).
#pragma once

#include <ATen/core/Tensor.h>

namespace vlbert_fast {

// out[i] = tl.rand(seed, counters[i]) for int32 counters: Philox-4x32-10 (Salmon et al., SC 2011) keyed by
// (seed low word, seed high word) on the counter (counters[i] mod 2^32, 0, 0, 0); the first output word read as an
// int32, folded to non-negative (x < 0 -> -x - 1) and scaled by 4.6566127342e-10 in fp32.
void philox_uniform_cpu(int64_t seed,
                        const at::Tensor& counters,  // [n], int64 or int32, contiguous, CPU
                        at::Tensor& out);            // [n], fp32, contiguous, CPU

}  // namespace vlbert_fast
