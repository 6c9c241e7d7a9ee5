// RoIAlign on CUDA: one thread per output element (forward) or per output-gradient element (backward, atomicAdd
// into an fp32/fp64 buffer). Includes only <torch/extension.h> and <cuda_runtime.h>, so it compiles with nvcc
// against a CPU build of torch too (CI compile-checks it); the stream comes from Python as an integer.
//
// Thread order: with channels-last features the channel is the fastest index (neighbouring threads read
// neighbouring addresses); otherwise the output column is.
#include <cuda_runtime.h>
#include <torch/extension.h>

#include "roi_align.h"
#include "roi_align_common.h"

namespace vlbert_fast {
namespace {

// 256 threads: a common choice for memory-bound gathers; enough blocks for any realistic K*C*PH*PW, and the
// grid-stride loop covers the rest.
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 32;

struct Shape {
  int64_t N, C, H, W, K, PH, PW;
};
struct Strides4 {
  int64_t s0, s1, s2, s3;
};

Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// Linear index -> (k, c, ph, pw) in the order that makes neighbouring threads touch neighbouring memory.
__device__ __forceinline__ void unravel(int64_t i, const Shape& s, bool channel_fastest, int64_t& k, int64_t& c,
                                        int64_t& ph, int64_t& pw) {
  if (channel_fastest) {
    c = i % s.C;
    i /= s.C;
    pw = i % s.PW;
    i /= s.PW;
    ph = i % s.PH;
    k = i / s.PH;
  } else {
    pw = i % s.PW;
    i /= s.PW;
    ph = i % s.PH;
    i /= s.PH;
    c = i % s.C;
    k = i / s.C;
  }
}

template <typename scalar_t, typename A>
__global__ void roi_align_fwd_kernel(const scalar_t* __restrict__ feat,  // [N, C, H, W] via fs
                                     Strides4 fs,
                                     const A* __restrict__ rois,  // [K, 5]
                                     scalar_t* __restrict__ out,  // [K, C, PH, PW] via os
                                     Strides4 os, Shape s, A spatial_scale, int64_t sampling_ratio, bool aligned,
                                     bool channel_fastest) {
  const int64_t total = s.K * s.C * s.PH * s.PW;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw;
    unravel(i, s, channel_fastest, k, c, ph, pw);
    const RoiGeometry<A> g = roi_geometry<A>(rois + 5 * k, s.N, s.PH, s.PW, spatial_scale, sampling_ratio, aligned);
    A acc = A(0);
    if (g.batch >= 0) {
      const scalar_t* plane = feat + g.batch * fs.s0 + c * fs.s1;
      for (int64_t iy = 0; iy < g.grid_h; ++iy) {
        const AxisWeights<A> wy = axis_weights(sample_coord(g.start_y, g.bin_h, ph, iy, g.grid_h), s.H);
        if (wy.w_low == A(0) && wy.w_high == A(0)) continue;  // outside: contributes 0 (even over inf/NaN)
        for (int64_t ix = 0; ix < g.grid_w; ++ix) {
          const AxisWeights<A> wx = axis_weights(sample_coord(g.start_x, g.bin_w, pw, ix, g.grid_w), s.W);
          if (wx.w_low == A(0) && wx.w_high == A(0)) continue;
          const scalar_t* r0 = plane + wy.low * fs.s2;
          const scalar_t* r1 = plane + wy.high * fs.s2;
          acc += wy.w_low * (wx.w_low * static_cast<A>(r0[wx.low * fs.s3]) +
                             wx.w_high * static_cast<A>(r0[wx.high * fs.s3])) +
                 wy.w_high * (wx.w_low * static_cast<A>(r1[wx.low * fs.s3]) +
                              wx.w_high * static_cast<A>(r1[wx.high * fs.s3]));
        }
      }
    }
    out[k * os.s0 + c * os.s1 + ph * os.s2 + pw * os.s3] = static_cast<scalar_t>(acc * g.inv_count);
  }
}

template <typename scalar_t, typename A>
__global__ void roi_align_bwd_kernel(const scalar_t* __restrict__ grad_out,  // [K, C, PH, PW] via gs
                                     Strides4 gs,
                                     const A* __restrict__ rois,  // [K, 5]
                                     A* __restrict__ grad_acc,    // [N, C, H, W] via as, zero-filled
                                     Strides4 as, Shape s, A spatial_scale, int64_t sampling_ratio, bool aligned,
                                     bool channel_fastest) {
  const int64_t total = s.K * s.C * s.PH * s.PW;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c, ph, pw;
    unravel(i, s, channel_fastest, k, c, ph, pw);
    const RoiGeometry<A> g = roi_geometry<A>(rois + 5 * k, s.N, s.PH, s.PW, spatial_scale, sampling_ratio, aligned);
    if (g.batch < 0) continue;
    const A grad = static_cast<A>(grad_out[k * gs.s0 + c * gs.s1 + ph * gs.s2 + pw * gs.s3]) * g.inv_count;
    A* plane = grad_acc + g.batch * as.s0 + c * as.s1;
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      const AxisWeights<A> wy = axis_weights(sample_coord(g.start_y, g.bin_h, ph, iy, g.grid_h), s.H);
      if (wy.w_low == A(0) && wy.w_high == A(0)) continue;
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const AxisWeights<A> wx = axis_weights(sample_coord(g.start_x, g.bin_w, pw, ix, g.grid_w), s.W);
        if (wx.w_low == A(0) && wx.w_high == A(0)) continue;
        atomicAdd(plane + wy.low * as.s2 + wx.low * as.s3, grad * wy.w_low * wx.w_low);
        atomicAdd(plane + wy.low * as.s2 + wx.high * as.s3, grad * wy.w_low * wx.w_high);
        atomicAdd(plane + wy.high * as.s2 + wx.low * as.s3, grad * wy.w_high * wx.w_low);
        atomicAdd(plane + wy.high * as.s2 + wx.high * as.s3, grad * wy.w_high * wx.w_high);
      }
    }
  }
}

int64_t blocks_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace

void roi_align_forward_cuda(const at::Tensor& features, const at::Tensor& rois, at::Tensor& out,
                            const RoiAlignParams& p, int64_t stream) {
  const Shape s{features.size(0), features.size(1), features.size(2), features.size(3),
                rois.size(0),     p.pooled_h,       p.pooled_w};
  const int64_t total = s.K * s.C * s.PH * s.PW;
  if (total == 0) return;
  const bool channel_fastest = features.stride(1) == 1;
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "roi_align_forward_cuda", [&] {
    using A = typename AccType<scalar_t>::type;
    roi_align_fwd_kernel<scalar_t, A><<<blocks_for(total), kThreads, 0, cuda_stream>>>(
        features.data_ptr<scalar_t>(), strides_of(features), rois.data_ptr<A>(), out.data_ptr<scalar_t>(),
        strides_of(out), s, static_cast<A>(p.spatial_scale), p.sampling_ratio, p.aligned, channel_fastest);
  });
  check_launch("roi_align_forward_cuda");
}

void roi_align_backward_cuda(const at::Tensor& grad_out, const at::Tensor& rois, at::Tensor& grad_acc,
                             const RoiAlignParams& p, int64_t stream) {
  const Shape s{grad_acc.size(0), grad_acc.size(1), grad_acc.size(2), grad_acc.size(3),
                rois.size(0),     p.pooled_h,       p.pooled_w};
  const int64_t total = s.K * s.C * s.PH * s.PW;
  if (total == 0) return;
  const bool channel_fastest = grad_acc.stride(1) == 1;
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "roi_align_backward_cuda", [&] {
    using A = typename AccType<scalar_t>::type;
    roi_align_bwd_kernel<scalar_t, A><<<blocks_for(total), kThreads, 0, cuda_stream>>>(
        grad_out.data_ptr<scalar_t>(), strides_of(grad_out), rois.data_ptr<A>(), grad_acc.data_ptr<A>(),
        strides_of(grad_acc), s, static_cast<A>(p.spatial_scale), p.sampling_ratio, p.aligned, channel_fastest);
  });
  check_launch("roi_align_backward_cuda");
}

}  // namespace vlbert_fast
