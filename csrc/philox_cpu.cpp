// Philox-4x32-10 on the CPU: the dropout draws of the plain-PyTorch references (vlbert_fast/ops/embedding.py,
// `philox_uniform`) at memory speed. The same function as Triton's tl.rand and the PyTorch twin
// `philox_uniform_torch`, so the three give bitwise equal numbers (tests/ops/test_dropout_random.py).
//
// One element per counter, independent of every other: the loop is split over threads by at::parallel_for and its
// body (32x32 -> 64-bit products, xors) is straight-line code the compiler vectorises.
#include "philox.h"

#include <ATen/Parallel.h>

#include <cstdint>

namespace vlbert_fast {
namespace {

constexpr uint32_t kKeyA = 0x9E3779B9u;    // Weyl increments of the key (golden ratio, sqrt(3) - 1)
constexpr uint32_t kKeyB = 0xBB67AE85u;
constexpr uint32_t kRoundA = 0xD2511F53u;  // round multipliers (Random123's PHILOX_M4x32_0 and _1)
constexpr uint32_t kRoundB = 0xCD9E8D57u;
constexpr int kRounds = 10;
constexpr int64_t kGrain = 1 << 14;  // elements per task: about 50 us of work, far above the scheduling cost

template <typename index_t>
void draw(uint32_t key0, uint32_t key1, const index_t* counters, float* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    uint32_t c0 = static_cast<uint32_t>(static_cast<uint64_t>(counters[i]));  // the low word, as the twin's & MASK32
    uint32_t c1 = 0, c2 = 0, c3 = 0;
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < kRounds; ++r) {
      const uint64_t pa = static_cast<uint64_t>(kRoundA) * c0;
      const uint64_t pb = static_cast<uint64_t>(kRoundB) * c2;
      const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
      c1 = static_cast<uint32_t>(pb);
      c3 = static_cast<uint32_t>(pa);
      c0 = n0;
      c2 = n2;
      k0 += kKeyA;
      k1 += kKeyB;
    }
    const int32_t word = static_cast<int32_t>(c0);
    const int32_t folded = word < 0 ? -(word + 1) : word;  // -x - 1 without overflowing at INT32_MIN
    out[i] = static_cast<float>(folded) * 4.6566127342e-10f;
  }
}

}  // namespace

void philox_uniform_cpu(int64_t seed, const at::Tensor& counters, at::Tensor& out) {
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint32_t key0 = static_cast<uint32_t>(s), key1 = static_cast<uint32_t>(s >> 32);
  float* dst = out.data_ptr<float>();
  const int64_t n = counters.numel();
  if (counters.scalar_type() == at::kLong) {
    const int64_t* src = counters.data_ptr<int64_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { draw(key0, key1, src, dst, b, e); });
  } else {
    const int32_t* src = counters.data_ptr<int32_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { draw(key0, key1, src, dst, b, e); });
  }
}

}  // namespace vlbert_fast
