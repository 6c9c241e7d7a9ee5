// RoIAlign kernels behind vlbert_fast._C (declared here, defined in roi_align_cpu.cpp / roi_align_cuda.cu).
// The checks, the allocation and the device dispatch live in vlbert_fast_api.cpp; these functions trust their
// arguments. Every tensor is read and written through its strides, so any memory format works without a copy.
#pragma once

#include <ATen/core/Tensor.h>

namespace vlbert_fast {

struct RoiAlignParams {
  int64_t pooled_h, pooled_w;
  double spatial_scale;
  int64_t sampling_ratio;  // > 0: fixed samples per bin axis; 0: adaptive ceil(bin size)
  bool aligned;
};

// out[k, c, ph, pw] = mean of the bin's bilinear samples of features[batch(k), c].
void roi_align_forward_cpu(const at::Tensor& features,  // [N, C, H, W], fp32/fp64/fp16/bf16
                           const at::Tensor& rois,      // [K, 5], contiguous, accumulation dtype
                           at::Tensor& out,             // [K, C, PH, PW], features' dtype
                           const RoiAlignParams& p);

// grad_acc[n, c, h, w] += sum over the samples touching (h, w); grad_acc is zero-filled by the caller.
// Parallel over channels and sequential over boxes, so the order of additions never changes: deterministic.
void roi_align_backward_cpu(const at::Tensor& grad_out,  // [K, C, PH, PW]
                            const at::Tensor& rois,      // [K, 5], contiguous, accumulation dtype
                            at::Tensor& grad_acc,        // [N, C, H, W], accumulation dtype (fp32, fp64 for fp64)
                            const RoiAlignParams& p);

#ifdef WITH_CUDA
// Same contracts on CUDA tensors, launched on `stream` (a cudaStream_t passed from Python as an integer, so this
// file needs no ATen CUDA headers). The backward uses atomicAdd: fast, not bitwise deterministic.
void roi_align_forward_cuda(const at::Tensor& features, const at::Tensor& rois, at::Tensor& out,
                            const RoiAlignParams& p, int64_t stream);
void roi_align_backward_cuda(const at::Tensor& grad_out, const at::Tensor& rois, at::Tensor& grad_acc,
                             const RoiAlignParams& p, int64_t stream);
#endif

}  // namespace vlbert_fast
