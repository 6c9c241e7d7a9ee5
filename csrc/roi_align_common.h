// RoIAlign geometry shared by the C++ CPU and the CUDA kernels (one definition, two compilers).
//
// Semantics of torchvision.ops.roi_align / Detectron's RoIAlign (He et al., Mask R-CNN, 2017):
//   box in feature cells: start = x1 * spatial_scale - offset, end = x2 * spatial_scale - offset, where
//   offset = 0.5 when aligned (pixel centres sit at half-integers) and 0 in the legacy mode; the legacy mode also
//   clamps the box width/height to at least one cell. Each of the pooled_h x pooled_w bins averages
//   grid_h x grid_w bilinear samples at the centres of a regular sub-grid; grid = sampling_ratio, or
//   ceil(bin size) when sampling_ratio is 0 (adaptive). A sample outside [-1, size] on either axis contributes 0;
//   inside, its coordinate is clamped to [0, size - 1] before the bilinear weights are taken.
//
// Bilinear interpolation is separable: the weight of sample (y, x) on cell (h, w) is wy(h) * wx(w), and the
// zero rule is "y invalid or x invalid", so each axis is handled on its own (AxisWeights).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define VF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VF_HOST_DEVICE inline
#endif

namespace vlbert_fast {

// Accumulation type: fp32 for fp16/bf16/fp32 storage, fp64 for fp64.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

template <typename A>
struct RoiGeometry {
  int64_t batch;  // image index; -1 when out of range (the box then pools to 0 and gets no gradient)
  A start_y, start_x;
  A bin_h, bin_w;
  int64_t grid_h, grid_w;  // samples per bin along each axis (>= 0)
  A step_h, step_w;        // distance between a bin's samples: bin / max(grid, 1)
  A inv_count;             // 1 / max(grid_h * grid_w, 1), torchvision's divisor
};

// Samples per bin along one axis: sampling_ratio, or ceil(bin) when adaptive. A negative or NaN bin (an
// aligned box with x2 < x1) gives 0 samples, as torchvision's loops run zero times. Capped so that a
// nonsensical huge box cannot overflow the integer.
template <typename A>
VF_HOST_DEVICE int64_t samples_per_bin(A bin, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  double g = ceil(static_cast<double>(bin));
  if (!(g > 0.0)) return 0;
  return g > 1048576.0 ? 1048576 : static_cast<int64_t>(g);
}

template <typename A>
VF_HOST_DEVICE RoiGeometry<A> roi_geometry(
    const A* roi,  // [5] (batch index, x1, y1, x2, y2) in input-image pixels
    int64_t batch_size, int64_t pooled_h, int64_t pooled_w, A spatial_scale, int64_t sampling_ratio, bool aligned) {
  RoiGeometry<A> g;
  // torchvision truncates the batch index toward zero (a C cast), which maps (-1, N) onto 0..N-1; anything else
  // (NaN included) is out of range. Compared as a float first so the cast never overflows.
  const A b = roi[0];
  g.batch = (b > A(-1) && b < static_cast<A>(batch_size)) ? static_cast<int64_t>(b) : -1;
  const A offset = aligned ? A(0.5) : A(0);
  g.start_x = roi[1] * spatial_scale - offset;
  g.start_y = roi[2] * spatial_scale - offset;
  A roi_w = roi[3] * spatial_scale - offset - g.start_x;
  A roi_h = roi[4] * spatial_scale - offset - g.start_y;
  if (!aligned) {  // legacy: a box is at least one cell wide and high
    roi_w = roi_w > A(1) ? roi_w : A(1);
    roi_h = roi_h > A(1) ? roi_h : A(1);
  }
  g.bin_w = roi_w / static_cast<A>(pooled_w);
  g.bin_h = roi_h / static_cast<A>(pooled_h);
  g.grid_h = samples_per_bin(g.bin_h, sampling_ratio);
  g.grid_w = samples_per_bin(g.bin_w, sampling_ratio);
  g.step_h = g.bin_h / static_cast<A>(g.grid_h > 1 ? g.grid_h : 1);
  g.step_w = g.bin_w / static_cast<A>(g.grid_w > 1 ? g.grid_w : 1);
  int64_t count = g.grid_h * g.grid_w;
  g.inv_count = A(1) / static_cast<A>(count > 1 ? count : 1);
  return g;
}

// Coordinate of sample i (0 <= i < grid) of bin p along one axis, as the reference computes it (the step divided
// once per box, so no sample pays a division). I: the integer type (int64_t on the CPU, int on the GPU, where a
// 64-bit integer-to-float conversion costs several instructions).
template <typename A, typename I>
VF_HOST_DEVICE A sample_coord(A start, A bin, A step, I p, I i) {
  return start + static_cast<A>(p) * bin + (static_cast<A>(i) + A(0.5)) * step;
}

template <typename A, typename I = int64_t>
struct AxisWeights {
  I low, high;      // the two neighbouring cells (equal at the far border)
  A w_low, w_high;  // their weights; both 0 when the sample is outside [-1, size]
};

template <typename A, typename I>
VF_HOST_DEVICE AxisWeights<A, I> axis_weights(A v, I size) {
  AxisWeights<A, I> a;
  if (!(v >= A(-1) && v <= static_cast<A>(size))) {  // also rejects NaN
    a.low = a.high = 0;
    a.w_low = a.w_high = A(0);
    return a;
  }
  if (v < A(0)) v = A(0);
  a.low = static_cast<I>(v);
  if (a.low >= size - 1) {  // at or beyond the last cell centre: all weight on the last cell
    a.low = a.high = size - 1;
    v = static_cast<A>(a.low);
  } else {
    a.high = a.low + 1;
  }
  A l = v - static_cast<A>(a.low);
  a.w_low = A(1) - l;
  a.w_high = l;
  return a;
}

}  // namespace vlbert_fast
