// RoIAlign on CPU: forward parallel over boxes, backward parallel over channels (deterministic).
//
// Per (box, bin) the samples' cells and weights are computed once (a short list of plane offsets h*sH + w*sW and
// weights), then applied to every channel: the geometry work is independent of C.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "roi_align.h"
#include "roi_align_common.h"

namespace vlbert_fast {
namespace {

template <typename A>
struct Tap {
  int64_t offset;  // h * stride_h + w * stride_w inside one feature plane
  A weight;        // bilinear weight / sample count
};

// The taps of bin (ph, pw) of a box: four per valid sample, pre-divided by the sample count.
template <typename A>
void bin_taps(const RoiGeometry<A>& g, int64_t ph, int64_t pw, int64_t H, int64_t W, int64_t stride_h,
              int64_t stride_w, std::vector<Tap<A>>& taps) {
  taps.clear();
  for (int64_t iy = 0; iy < g.grid_h; ++iy) {
    const AxisWeights<A> wy = axis_weights(sample_coord(g.start_y, g.bin_h, g.step_h, ph, iy), H);
    if (wy.w_low == A(0) && wy.w_high == A(0)) continue;
    for (int64_t ix = 0; ix < g.grid_w; ++ix) {
      const AxisWeights<A> wx = axis_weights(sample_coord(g.start_x, g.bin_w, g.step_w, pw, ix), W);
      if (wx.w_low == A(0) && wx.w_high == A(0)) continue;
      const int64_t y0 = wy.low * stride_h, y1 = wy.high * stride_h;
      const int64_t x0 = wx.low * stride_w, x1 = wx.high * stride_w;
      taps.push_back({y0 + x0, wy.w_low * wx.w_low * g.inv_count});
      taps.push_back({y0 + x1, wy.w_low * wx.w_high * g.inv_count});
      taps.push_back({y1 + x0, wy.w_high * wx.w_low * g.inv_count});
      taps.push_back({y1 + x1, wy.w_high * wx.w_high * g.inv_count});
    }
  }
}

template <typename scalar_t>
void forward_impl(const at::Tensor& features, const at::Tensor& rois, at::Tensor& out, const RoiAlignParams& p) {
  using A = typename AccType<scalar_t>::type;
  const int64_t N = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  const int64_t K = rois.size(0);
  const int64_t sN = features.stride(0), sC = features.stride(1), sH = features.stride(2), sW = features.stride(3);
  const int64_t oK = out.stride(0), oC = out.stride(1), oH = out.stride(2), oW = out.stride(3);
  const scalar_t* feat = features.data_ptr<scalar_t>();
  const A* roi = rois.data_ptr<A>();
  scalar_t* dst = out.data_ptr<scalar_t>();
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tap<A>> taps;
    for (int64_t k = begin; k < end; ++k) {
      const RoiGeometry<A> g = roi_geometry<A>(roi + 5 * k, N, p.pooled_h, p.pooled_w,
                                               static_cast<A>(p.spatial_scale), p.sampling_ratio, p.aligned);
      for (int64_t ph = 0; ph < p.pooled_h; ++ph) {
        for (int64_t pw = 0; pw < p.pooled_w; ++pw) {
          if (g.batch >= 0) {
            bin_taps(g, ph, pw, H, W, sH, sW, taps);
          } else {
            taps.clear();
          }
          const scalar_t* plane = feat + (g.batch >= 0 ? g.batch : 0) * sN;
          scalar_t* o = dst + k * oK + ph * oH + pw * oW;
          for (int64_t c = 0; c < C; ++c) {
            A acc = A(0);
            for (const Tap<A>& t : taps) acc += t.weight * static_cast<A>(plane[c * sC + t.offset]);
            o[c * oC] = static_cast<scalar_t>(acc);
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& rois, at::Tensor& grad_acc,
                   const RoiAlignParams& p) {
  using A = typename AccType<scalar_t>::type;
  const int64_t N = grad_acc.size(0), C = grad_acc.size(1), H = grad_acc.size(2), W = grad_acc.size(3);
  const int64_t K = rois.size(0);
  const int64_t sN = grad_acc.stride(0), sC = grad_acc.stride(1), sH = grad_acc.stride(2), sW = grad_acc.stride(3);
  const int64_t gK = grad_out.stride(0), gC = grad_out.stride(1), gH = grad_out.stride(2), gW = grad_out.stride(3);
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const A* roi = rois.data_ptr<A>();
  A* gi = grad_acc.data_ptr<A>();
  // Each task owns a channel range of every image, so no two tasks write the same cell and each cell receives
  // its additions in box order, bin order, sample order: the result is independent of the thread count.
  at::parallel_for(0, C, 1, [&](int64_t c_begin, int64_t c_end) {
    std::vector<Tap<A>> taps;
    for (int64_t k = 0; k < K; ++k) {
      const RoiGeometry<A> g = roi_geometry<A>(roi + 5 * k, N, p.pooled_h, p.pooled_w,
                                               static_cast<A>(p.spatial_scale), p.sampling_ratio, p.aligned);
      if (g.batch < 0) continue;
      A* plane = gi + g.batch * sN;
      for (int64_t ph = 0; ph < p.pooled_h; ++ph) {
        for (int64_t pw = 0; pw < p.pooled_w; ++pw) {
          bin_taps(g, ph, pw, H, W, sH, sW, taps);
          if (taps.empty()) continue;
          for (int64_t c = c_begin; c < c_end; ++c) {
            const A grad = static_cast<A>(go[k * gK + c * gC + ph * gH + pw * gW]);
            for (const Tap<A>& t : taps) plane[c * sC + t.offset] += grad * t.weight;
          }
        }
      }
    }
  });
}

}  // namespace

void roi_align_forward_cpu(const at::Tensor& features, const at::Tensor& rois, at::Tensor& out,
                           const RoiAlignParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "roi_align_forward_cpu",
                                  [&] { forward_impl<scalar_t>(features, rois, out, p); });
}

void roi_align_backward_cpu(const at::Tensor& grad_out, const at::Tensor& rois, at::Tensor& grad_acc,
                            const RoiAlignParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "roi_align_backward_cpu",
                                  [&] { backward_impl<scalar_t>(grad_out, rois, grad_acc, p); });
}

}  // namespace vlbert_fast
