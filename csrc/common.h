// Shared by the CPU (.cpp) and CUDA (.cu) kernels: index arithmetic that must agree bit for bit with
// PyTorch's, so the fused kernels reproduce F.interpolate and torch.argmax.
#pragma once

#include <cstdint>
#include <cmath>

#if defined(__CUDACC__)
#define TS_HD __host__ __device__ __forceinline__
#else
#define TS_HD inline
#endif

namespace trashseg {

// Bits of the per-device error word written by the confusion-matrix kernels (see ops.check_errors).
// errors tensor layout (int64, 4 entries):
//   [0] number of pixels whose target was outside [0, C) and not ignore_index
//   [1] one such target value (INT64_MIN when none recorded)
//   [2] number of (non-ignored) pixels whose predicted label was outside [0, C)
//   [3] one such predicted value (INT64_MIN when none recorded)
constexpr int kErrTargetCount = 0;
constexpr int kErrTargetValue = 1;
constexpr int kErrPredCount = 2;
constexpr int kErrPredValue = 3;

// F.interpolate(mode="bilinear", align_corners=False) without explicit scale factors:
// scale = in / out in float (ATen's area_pixel_compute_scale / compute_scales_value).
TS_HD float bilinear_scale(int64_t in_size, int64_t out_size) {
  return static_cast<float>(in_size) / static_cast<float>(out_size);
}

// One output coordinate -> the two source taps and their weights, as ATen's area_pixel_compute_source_index +
// guard_index_and_lambda (UpSample.h). The source coordinate is one fused multiply-add, which is what PyTorch's
// builds compute (its CPU kernels are compiled with FMA contraction, nvcc contracts by default): with a separate
// multiply and add, coordinates near 100 round differently and results drift by ~1e-5 from F.interpolate.
// F.interpolate copies along a dimension whose size is unchanged; the formula below gives w1 = 0 there, but the
// kernels must still not read the second tap (0 * inf = NaN would spread a non-finite logit to its neighbour):
// they test `same size` per dimension and read tap 0 alone.
struct Taps {
  int64_t i0;
  int64_t i1;
  float w0;
  float w1;
};

TS_HD Taps bilinear_taps(float scale, int64_t dst, int64_t in_size) {
  float src = fmaf(scale, static_cast<float>(dst) + 0.5f, -0.5f);
  if (src < 0.f) src = 0.f;
  int64_t i0 = static_cast<int64_t>(floorf(src));
  if (i0 > in_size - 1) i0 = in_size - 1;
  float l1 = src - static_cast<float>(i0);
  l1 = l1 < 0.f ? 0.f : (l1 > 1.f ? 1.f : l1);
  Taps t;
  t.i0 = i0;
  t.i1 = i0 + ((i0 < in_size - 1) ? 1 : 0);
  t.w1 = l1;
  t.w0 = 1.f - l1;
  return t;
}

// torch.argmax's rule for one comparison: a strictly larger value wins (so ties keep the lowest index), and the
// first NaN wins over everything after it (NaN is treated as the maximum).
// float64 logits compare in float64 (a float32 round would tie 1 and 1 + 1e-12).
template <typename F>
TS_HD bool argmax_takes(F v, F best) {
  return (v > best) || (v != v && best == best);
}

}  // namespace trashseg
