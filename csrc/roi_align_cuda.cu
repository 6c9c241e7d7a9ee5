// RoIAlign on CUDA. One block per (box, bin row) and block of channels; each thread owns VEC neighbouring channels
// (16 bytes of features: 8 bf16/fp16, 4 fp32, 2 fp64) and walks the row's bins, so the box geometry is computed
// once per thread, each bilinear tap of a channels-last map is one 128-bit load, and the hot loop (one sample)
// holds no 64-bit division or modulo: tap offsets inside one feature map are 32-bit (the host checks they fit).
// The backward scatters with atomicAdd into an fp32 (fp64) buffer; on sm_90 four fp32 at a time (RED.F32x4).
// Atomic adds carry no fence (REDG, relaxed): nothing reads the buffer before the kernel ends.
//
// Includes only <torch/extension.h> and <cuda_runtime.h>, so it compiles with nvcc against a CPU build of torch too
// (CI compile-checks it); the stream comes from Python as an integer. Features and gradients are made channels-last
// here (a no-op when they already are), and results are copied into the caller's memory format at the end.
#include <cuda_runtime.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "roi_align.h"
#include "roi_align_common.h"

namespace vlbert_fast {
namespace {

constexpr int kMaxThreads = 256;  // threads per block at most: 256 x 16 B = 4 KiB of channels per load
constexpr int kVectorBytes = 16;

struct Shape {
  int N, C, H, W, PH, PW;
};
// Strides in elements: the map's (batch stride is 64-bit; the others address inside one map, 32-bit).
struct MapStrides {
  int64_t n;
  int c, h, w;
};
// The output / output gradient [K, C, PH, PW]: k is 64-bit, the rest 32-bit.
struct BoxStrides {
  int64_t k;
  int c, h, w;
};

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// VEC neighbouring channels from p, converted to the accumulation type (one 16-byte load when VEC > 1).
template <typename T, int VEC, typename A>
__device__ __forceinline__ void load_pack(const T* p, A (&out)[VEC]) {
  if constexpr (VEC > 1) {
    const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = static_cast<A>(pk.v[j]);
  } else {
    out[0] = static_cast<A>(p[0]);
  }
}

// Adds w * v[j] to dst[j] (VEC neighbouring channels; VEC == 1 when the channels are not contiguous).
template <typename A, int VEC>
__device__ __forceinline__ void atomic_add_pack(A* dst, const A (&v)[VEC], A w) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kFloat4 = std::is_same<A, float>::value && VEC % 4 == 0;  // sm_90's atomicAdd(float4*)
#else
  constexpr bool kFloat4 = false;
#endif
  if constexpr (kFloat4) {
#pragma unroll
    for (int j = 0; j < VEC; j += 4) {
      atomicAdd(reinterpret_cast<float4*>(dst + j), make_float4(w * v[j], w * v[j + 1], w * v[j + 2], w * v[j + 3]));
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) atomicAdd(dst + j, w * v[j]);
  }
}

template <typename scalar_t, typename A, int VEC>
__global__ void roi_align_fwd_kernel(const scalar_t* __restrict__ feat,  // [N, C, H, W] via fs
                                     MapStrides fs,
                                     const A* __restrict__ rois,  // [K, 5]
                                     scalar_t* __restrict__ out,  // [K, C, PH, PW] via os
                                     BoxStrides os, Shape s, A spatial_scale, int sampling_ratio, bool aligned) {
  const int k = blockIdx.x / s.PH;
  const int ph = blockIdx.x - k * s.PH;
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * VEC;
  if (c >= s.C) return;
  const RoiGeometry<A> g = roi_geometry<A>(rois + 5 * static_cast<int64_t>(k), s.N, s.PH, s.PW, spatial_scale,
                                           sampling_ratio, aligned);
  const int grid_h = static_cast<int>(g.grid_h), grid_w = static_cast<int>(g.grid_w);
  const scalar_t* plane = feat + (g.batch >= 0 ? g.batch : 0) * fs.n + c * fs.c;
  scalar_t* dst = out + k * os.k + c * os.c + ph * os.h;
  for (int pw = 0; pw < s.PW; ++pw) {
    A acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = A(0);
    if (g.batch >= 0) {
      for (int iy = 0; iy < grid_h; ++iy) {
        const AxisWeights<A, int> wy = axis_weights(sample_coord(g.start_y, g.bin_h, g.step_h, ph, iy), s.H);
        if (wy.w_low == A(0) && wy.w_high == A(0)) continue;  // outside: contributes 0 (even over inf/NaN)
        const scalar_t* r0 = plane + wy.low * fs.h;
        const scalar_t* r1 = plane + wy.high * fs.h;
        // one sample per iteration: VL-BERT's sampling ratio of 1 runs it once, so unrolling buys nothing (and the
        // scorecard reads one iteration as one sample)
#pragma unroll 1
        for (int ix = 0; ix < grid_w; ++ix) {
          const AxisWeights<A, int> wx = axis_weights(sample_coord(g.start_x, g.bin_w, g.step_w, pw, ix), s.W);
          if (wx.w_low == A(0) && wx.w_high == A(0)) continue;
          A v00[VEC], v01[VEC], v10[VEC], v11[VEC];
          load_pack<scalar_t, VEC>(r0 + wx.low * fs.w, v00);
          load_pack<scalar_t, VEC>(r0 + wx.high * fs.w, v01);
          load_pack<scalar_t, VEC>(r1 + wx.low * fs.w, v10);
          load_pack<scalar_t, VEC>(r1 + wx.high * fs.w, v11);
          const A w00 = wy.w_low * wx.w_low, w01 = wy.w_low * wx.w_high;
          const A w10 = wy.w_high * wx.w_low, w11 = wy.w_high * wx.w_high;
#pragma unroll
          for (int j = 0; j < VEC; ++j) acc[j] += w00 * v00[j] + w01 * v01[j] + w10 * v10[j] + w11 * v11[j];
        }
      }
    }
    scalar_t* o = dst + pw * os.w;
    if constexpr (VEC > 1) {
      Pack<scalar_t, VEC> pk;
#pragma unroll
      for (int j = 0; j < VEC; ++j) pk.v[j] = static_cast<scalar_t>(acc[j] * g.inv_count);
      *reinterpret_cast<Pack<scalar_t, VEC>*>(o) = pk;
    } else {
      o[0] = static_cast<scalar_t>(acc[0] * g.inv_count);
    }
  }
}

template <typename scalar_t, typename A, int VEC>
__global__ void roi_align_bwd_kernel(const scalar_t* __restrict__ grad_out,  // [K, C, PH, PW] via gs
                                     BoxStrides gs,
                                     const A* __restrict__ rois,  // [K, 5]
                                     A* __restrict__ grad_acc,    // [N, C, H, W] via as, zero-filled
                                     MapStrides as, Shape s, A spatial_scale, int sampling_ratio, bool aligned) {
  const int k = blockIdx.x / s.PH;
  const int ph = blockIdx.x - k * s.PH;
  const int c = (blockIdx.y * blockDim.x + threadIdx.x) * VEC;
  if (c >= s.C) return;
  const RoiGeometry<A> g = roi_geometry<A>(rois + 5 * static_cast<int64_t>(k), s.N, s.PH, s.PW, spatial_scale,
                                           sampling_ratio, aligned);
  if (g.batch < 0) return;
  const int grid_h = static_cast<int>(g.grid_h), grid_w = static_cast<int>(g.grid_w);
  const scalar_t* src = grad_out + k * gs.k + c * gs.c + ph * gs.h;
  A* plane = grad_acc + g.batch * as.n + c * as.c;
  for (int pw = 0; pw < s.PW; ++pw) {
    A grad[VEC];
    load_pack<scalar_t, VEC>(src + pw * gs.w, grad);
#pragma unroll
    for (int j = 0; j < VEC; ++j) grad[j] *= g.inv_count;
    for (int iy = 0; iy < grid_h; ++iy) {
      const AxisWeights<A, int> wy = axis_weights(sample_coord(g.start_y, g.bin_h, g.step_h, ph, iy), s.H);
      if (wy.w_low == A(0) && wy.w_high == A(0)) continue;
      A* r0 = plane + wy.low * as.h;
      A* r1 = plane + wy.high * as.h;
#pragma unroll 1  // one sample per iteration, as in the forward
      for (int ix = 0; ix < grid_w; ++ix) {
        const AxisWeights<A, int> wx = axis_weights(sample_coord(g.start_x, g.bin_w, g.step_w, pw, ix), s.W);
        if (wx.w_low == A(0) && wx.w_high == A(0)) continue;
        atomic_add_pack<A, VEC>(r0 + wx.low * as.w, grad, wy.w_low * wx.w_low);
        atomic_add_pack<A, VEC>(r0 + wx.high * as.w, grad, wy.w_low * wx.w_high);
        atomic_add_pack<A, VEC>(r1 + wx.low * as.w, grad, wy.w_high * wx.w_low);
        atomic_add_pack<A, VEC>(r1 + wx.high * as.w, grad, wy.w_high * wx.w_high);
      }
    }
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

// The largest offset inside one [C, H, W] map or [C, PH, PW] box must fit the kernels' 32-bit indices.
void check_int32(const at::Tensor& t, const char* name) {
  int64_t last = 0;
  for (int d = 1; d < 4; ++d) last += (t.size(d) - 1) * t.stride(d);
  TORCH_CHECK(last < (int64_t(1) << 31) && t.size(0) < (int64_t(1) << 31), name, ": one map of ", t.sizes(),
              " spans 2**31 elements or more; the RoIAlign CUDA kernels index inside a map in 32 bits");
}

// Whether t allows VEC channels per access: channel stride 1, the other strides multiples of VEC, and the base
// aligned to the access (VEC elements, at most 16 bytes: the fp32 accumulator takes float4 atomics).
bool vector_ok(const at::Tensor& t, int vec) {
  if (vec <= 1) return true;
  if (t.size(1) % vec || t.stride(1) != 1 || t.stride(0) % vec || t.stride(2) % vec || t.stride(3) % vec) return false;
  const int64_t bytes = std::min<int64_t>(kVectorBytes, vec * t.element_size());
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % bytes == 0;
}

// (blocks, threads): blocks.x = K * PH (box, bin row), blocks.y = channel blocks.
std::pair<dim3, dim3> launch_shape(int64_t K, int64_t PH, int64_t C, int vec) {
  const int64_t lanes = (C + vec - 1) / vec;
  const int threads = static_cast<int>(std::min<int64_t>(kMaxThreads, (lanes + 31) / 32 * 32));
  TORCH_CHECK(K * PH < (int64_t(1) << 31), "roi_align: K * pooled_h = ", K * PH, " exceeds the CUDA grid");
  return {dim3(static_cast<unsigned>(K * PH), static_cast<unsigned>((lanes + threads - 1) / threads)), dim3(threads)};
}

MapStrides map_strides(const at::Tensor& t) {
  return {t.stride(0), static_cast<int>(t.stride(1)), static_cast<int>(t.stride(2)), static_cast<int>(t.stride(3))};
}
BoxStrides box_strides(const at::Tensor& t) {
  return {t.stride(0), static_cast<int>(t.stride(1)), static_cast<int>(t.stride(2)), static_cast<int>(t.stride(3))};
}

// VEC of this dtype (16 bytes) as a compile-time constant, or 1.
#define VF_DISPATCH_VEC(vec, VEC_NAME, BYTES, ...)              \
  [&] {                                                         \
    if ((vec) > 1) {                                            \
      constexpr int VEC_NAME = kVectorBytes / (BYTES);          \
      return __VA_ARGS__();                                     \
    }                                                           \
    constexpr int VEC_NAME = 1;                                 \
    return __VA_ARGS__();                                       \
  }()

}  // namespace

void roi_align_forward_cuda(const at::Tensor& features, const at::Tensor& rois, at::Tensor& out,
                            const RoiAlignParams& p, int64_t stream) {
  if (out.numel() == 0) return;
  const at::Tensor feat = features.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor dst = out.is_contiguous(at::MemoryFormat::ChannelsLast)
                       ? out
                       : at::empty_like(out, out.options().memory_format(at::MemoryFormat::ChannelsLast));
  check_int32(feat, "features");
  check_int32(dst, "output");
  const Shape s{static_cast<int>(feat.size(0)), static_cast<int>(feat.size(1)), static_cast<int>(feat.size(2)),
                static_cast<int>(feat.size(3)), static_cast<int>(p.pooled_h), static_cast<int>(p.pooled_w)};
  const int full = kVectorBytes / static_cast<int>(feat.element_size());
  const int vec = vector_ok(feat, full) && vector_ok(dst, full) ? full : 1;
  const std::pair<dim3, dim3> shape = launch_shape(rois.size(0), p.pooled_h, s.C, vec);
  const dim3 blocks = shape.first, threads = shape.second;
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(), "roi_align_forward_cuda", [&] {
    using A = typename AccType<scalar_t>::type;
    VF_DISPATCH_VEC(vec, VEC, sizeof(scalar_t), [&] {
      roi_align_fwd_kernel<scalar_t, A, VEC><<<blocks, threads, 0, cuda_stream>>>(
          feat.data_ptr<scalar_t>(), map_strides(feat), rois.data_ptr<A>(), dst.data_ptr<scalar_t>(),
          box_strides(dst), s, static_cast<A>(p.spatial_scale), static_cast<int>(p.sampling_ratio), p.aligned);
    });
  });
  check_launch("roi_align_forward_cuda");
  if (!dst.is_same(out)) out.copy_(dst);
}

void roi_align_backward_cuda(const at::Tensor& grad_out, const at::Tensor& rois, at::Tensor& grad_acc,
                             const RoiAlignParams& p, int64_t stream) {
  if (grad_out.numel() == 0 || grad_acc.numel() == 0) return;
  const at::Tensor go = grad_out.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor acc = grad_acc.is_contiguous(at::MemoryFormat::ChannelsLast)
                       ? grad_acc
                       : at::zeros_like(grad_acc, grad_acc.options().memory_format(at::MemoryFormat::ChannelsLast));
  check_int32(go, "grad_output");
  check_int32(acc, "features' gradient");
  const Shape s{static_cast<int>(acc.size(0)), static_cast<int>(acc.size(1)), static_cast<int>(acc.size(2)),
                static_cast<int>(acc.size(3)), static_cast<int>(p.pooled_h), static_cast<int>(p.pooled_w)};
  const int full = kVectorBytes / static_cast<int>(go.element_size());
  const int vec = vector_ok(go, full) && vector_ok(acc, full) ? full : 1;
  const std::pair<dim3, dim3> shape = launch_shape(rois.size(0), p.pooled_h, s.C, vec);
  const dim3 blocks = shape.first, threads = shape.second;
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "roi_align_backward_cuda", [&] {
    using A = typename AccType<scalar_t>::type;
    VF_DISPATCH_VEC(vec, VEC, sizeof(scalar_t), [&] {
      roi_align_bwd_kernel<scalar_t, A, VEC><<<blocks, threads, 0, cuda_stream>>>(
          go.data_ptr<scalar_t>(), box_strides(go), rois.data_ptr<A>(), acc.data_ptr<A>(), map_strides(acc), s,
          static_cast<A>(p.spatial_scale), static_cast<int>(p.sampling_ratio), p.aligned);
    });
  });
  check_launch("roi_align_backward_cuda");
  if (!acc.is_same(grad_acc)) grad_acc.copy_(acc);
}

}  // namespace vlbert_fast
