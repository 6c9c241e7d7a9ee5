// The one pybind11 surface of vlbert_fast._C: argument checks, allocation, CPU/CUDA dispatch.
//
// Python (vlbert_fast/ops/roi_align.py) registers these functions as torch.library custom ops and converts the
// boxes to the accumulation dtype; the checks here still name every bad argument for direct callers.
#include <torch/extension.h>

#include "philox.h"
#include "roi_align.h"

#define CHECK_DEVICE(x, expected) \
  TORCH_CHECK((x).device() == (expected), #x " must be on ", (expected), " (like the features), found ", (x).device())
#define CHECK_SHAPE(x, ...)                                                                         \
  TORCH_CHECK((x).sizes() == at::IntArrayRef({__VA_ARGS__}), #x " must have shape (" #__VA_ARGS__ \
              ") = ", at::IntArrayRef({__VA_ARGS__}), ", found ", (x).sizes())
#define CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous, found strides ", (x).strides())

namespace vlbert_fast {
namespace {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_floating(const at::Tensor& x, const char* name) {
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, name,
              " must be float32, float64, float16 or bfloat16, found ", t);
}

void check_rois(const at::Tensor& rois, const at::Tensor& like, at::ScalarType storage) {
  TORCH_CHECK(rois.dim() == 2, "rois must have shape [K, 5] (batch index, x1, y1, x2, y2), found ", rois.sizes());
  CHECK_SHAPE(rois, rois.size(0), 5);
  CHECK_DEVICE(rois, like.device());
  CHECK_CONTIGUOUS(rois);
  TORCH_CHECK(rois.scalar_type() == acc_dtype(storage), "rois must be ", acc_dtype(storage),
              " (the accumulation dtype) for ", storage, " features, found ", rois.scalar_type());
}

void check_params(int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio) {
  TORCH_CHECK(pooled_h > 0 && pooled_w > 0, "output_size must be positive, found (", pooled_h, ", ", pooled_w, ")");
  TORCH_CHECK(sampling_ratio >= 0, "sampling_ratio must be >= 0 (0 = adaptive), found ", sampling_ratio);
}

at::MemoryFormat format_for(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor roi_align_forward(const at::Tensor& features,  // [N, C, H, W], any strides
                             const at::Tensor& rois,      // [K, 5], contiguous, fp32 (fp64 for fp64 features)
                             int64_t pooled_h, int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,
                             bool aligned,
                             bool channels_last,  // memory format of the output
                             int64_t cuda_stream  // cudaStream_t as an integer; ignored on CPU
) {
  TORCH_CHECK(features.dim() == 4, "features must have shape [N, C, H, W], found ", features.sizes());
  check_floating(features, "features");
  check_rois(rois, features, features.scalar_type());
  check_params(pooled_h, pooled_w, sampling_ratio);
  const RoiAlignParams p{pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned};
  at::Tensor out = at::empty({rois.size(0), features.size(1), pooled_h, pooled_w},
                             features.options().memory_format(format_for(channels_last)));
  if (out.numel() == 0) return out;
  TORCH_CHECK(features.size(2) > 0 && features.size(3) > 0, "features must have H, W > 0, found ", features.sizes());
  if (features.is_cuda()) {
#ifdef WITH_CUDA
    roi_align_forward_cuda(features, rois, out, p, cuda_stream);
#else
    TORCH_CHECK(false, "features are on ", features.device(), " but vlbert_fast._C was built without CUDA");
#endif
  } else {
    CHECK_DEVICE(features, c10::Device(c10::kCPU));
    roi_align_forward_cpu(features, rois, out, p);
  }
  return out;
}

at::Tensor roi_align_backward(const at::Tensor& grad_output,  // [K, C, PH, PW], any strides
                              const at::Tensor& rois,         // [K, 5], contiguous, accumulation dtype
                              int64_t batch_size, int64_t height, int64_t width, int64_t sampling_ratio,
                              double spatial_scale, bool aligned,
                              bool channels_last,  // memory format of the features' gradient
                              int64_t cuda_stream) {
  TORCH_CHECK(grad_output.dim() == 4, "grad_output must have shape [K, C, PH, PW], found ", grad_output.sizes());
  check_floating(grad_output, "grad_output");
  check_rois(rois, grad_output, grad_output.scalar_type());
  CHECK_SHAPE(rois, grad_output.size(0), 5);  // one box per gradient row
  TORCH_CHECK(batch_size >= 0 && height > 0 && width > 0, "features shape must be positive, found (", batch_size,
              ", ", height, ", ", width, ")");
  const int64_t pooled_h = grad_output.size(2), pooled_w = grad_output.size(3);
  check_params(pooled_h, pooled_w, sampling_ratio);
  const RoiAlignParams p{pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned};
  // Accumulate in fp32 (fp64 for fp64) and round once at the end.
  at::Tensor grad_acc = at::zeros(
      {batch_size, grad_output.size(1), height, width},
      grad_output.options().dtype(acc_dtype(grad_output.scalar_type())).memory_format(format_for(channels_last)));
  if (grad_output.numel() > 0 && grad_acc.numel() > 0) {
    if (grad_output.is_cuda()) {
#ifdef WITH_CUDA
      roi_align_backward_cuda(grad_output, rois, grad_acc, p, cuda_stream);
#else
      TORCH_CHECK(false, "grad_output is on ", grad_output.device(), " but vlbert_fast._C was built without CUDA");
#endif
    } else {
      roi_align_backward_cpu(grad_output, rois, grad_acc, p);
    }
  }
  return grad_acc.to(grad_output.scalar_type());
}

at::Tensor philox_uniform(int64_t seed,               // the key: low and high 32-bit words
                          const at::Tensor& counters) {  // any shape, int64 or int32, CPU
  TORCH_CHECK(counters.device().is_cpu(), "counters must be on the CPU (on a GPU the Triton kernels draw in-kernel), "
              "found ", counters.device());
  TORCH_CHECK(counters.scalar_type() == at::kLong || counters.scalar_type() == at::kInt,
              "counters must be int64 or int32, found ", counters.scalar_type());
  const at::Tensor flat = counters.contiguous();
  at::Tensor out = at::empty(counters.sizes(), counters.options().dtype(at::kFloat));
  if (out.numel() > 0) philox_uniform_cpu(seed, flat, out);
  return out;
}

}  // namespace
}  // namespace vlbert_fast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "vlbert_fast C++/CUDA kernels (RoIAlign, Philox draws); called through vlbert_fast.ops";
  m.def("with_cuda", &vlbert_fast::with_cuda, "whether the CUDA kernels were compiled in");
  m.def("philox_uniform", &vlbert_fast::philox_uniform,
        "tl.rand(seed, counters) on the CPU: Philox-4x32-10 uniform draws in [0, 1), fp32", py::arg("seed"),
        py::arg("counters"));
  m.def("roi_align_forward", &vlbert_fast::roi_align_forward, "RoIAlign forward (torchvision semantics)",
        py::arg("features"), py::arg("rois"), py::arg("pooled_height"), py::arg("pooled_width"),
        py::arg("spatial_scale"), py::arg("sampling_ratio"), py::arg("aligned"), py::arg("channels_last"),
        py::arg("cuda_stream"));
  m.def("roi_align_backward", &vlbert_fast::roi_align_backward, "RoIAlign gradient w.r.t. the features",
        py::arg("grad_output"), py::arg("rois"), py::arg("batch_size"), py::arg("height"), py::arg("width"),
        py::arg("sampling_ratio"), py::arg("spatial_scale"), py::arg("aligned"), py::arg("channels_last"),
        py::arg("cuda_stream"));
}
