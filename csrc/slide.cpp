// slide_accumulate_: the window-sum step of sliding-window inference (SPEC §4 "Slide inference"), schema and CPU
// kernel. The CUDA kernel is in slide_cuda.cu; the pure-PyTorch reference and the Python API in slide.py. Kept
// apart from trashseg_ops.cpp (TORCH_LIBRARY_FRAGMENT) so the op library can grow without one file that every change
// touches.
//
// out (B, C, H, W) float32 contiguous is the view's running logit sum. windows (K*B, C, eh, ew), any float dtype
// and strides, holds grid windows first .. first+K-1 in mmseg's order (rows outer, columns inner), window k's image
// b at index k*B + b, eh/ew = min(crop, H/W). first == 0 zeroes out before adding. finalize (only with the last
// window) divides out by the per-pixel window count, in place: out then holds the view's logits and the TTA merge
// reads it directly (slide.py explains why the division is not folded into the TTA kernel). Windows are added one
// after another in grid order, so the sums are the same bits as mmseg's loop of F.pad + add.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "checks.h"
#include "slide.h"
#include "slide_checks.h"

namespace trashseg {
namespace {

inline float slide_to_f(float v) { return v; }
inline float slide_to_f(double v) { return static_cast<float>(v); }
inline float slide_to_f(c10::Half v) { return static_cast<float>(v); }
inline float slide_to_f(c10::BFloat16 v) { return static_cast<float>(v); }

template <typename T>
void add_windows(float* out, const at::Tensor& windows, const SlideGeom& g, int64_t first, int64_t K) {
  const T* base = static_cast<const T*>(windows.const_data_ptr());
  const int64_t sN = windows.stride(0), sC = windows.stride(1), sH = windows.stride(2), sW = windows.stride(3);
  const int64_t B = g.B, C = g.C, H = g.H, W = g.W, eh = g.eh, ew = g.ew;
  for (int64_t k = 0; k < K; ++k) {  // in grid order: overlapping windows add in mmseg's order
    const int64_t idx = first + k;
    const int64_t y0 = slide_start(idx / g.nx, H, g.crop_h, g.stride_h);
    const int64_t x0 = slide_start(idx % g.nx, W, g.crop_w, g.stride_w);
    // rows of this window are disjoint in out: parallel over (b, c, row)
    at::parallel_for(0, B * C * eh, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t i = r % eh;
        const int64_t c = (r / eh) % C;
        const int64_t b = r / (eh * C);
        float* __restrict o = out + ((b * C + c) * H + y0 + i) * W + x0;
        const T* __restrict s = base + (k * B + b) * sN + c * sC + i * sH;
        if (sW == 1) {
          for (int64_t j = 0; j < ew; ++j) o[j] += slide_to_f(s[j]);
        } else {
          for (int64_t j = 0; j < ew; ++j) o[j] += slide_to_f(s[j * sW]);
        }
      }
    });
  }
}

void divide_by_count(float* out, const SlideGeom& g) {
  const int64_t B = g.B, C = g.C, H = g.H, W = g.W;
  std::vector<float> cx(W);
  for (int64_t x = 0; x < W; ++x) cx[x] = static_cast<float>(slide_axis_count(x, W, g.crop_w, g.stride_w));
  at::parallel_for(0, B * C * H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % H;
      const float cy = static_cast<float>(slide_axis_count(y, H, g.crop_h, g.stride_h));
      float* __restrict o = out + r * W;
      // count = cy * cx exactly (small integers); dividing by it (not multiplying by a reciprocal) keeps mmseg's bits
      for (int64_t x = 0; x < W; ++x) o[x] = o[x] / (cy * cx[x]);
    }
  });
}

void slide_accumulate_cpu(at::Tensor& out, const at::Tensor& windows, at::IntArrayRef crop, at::IntArrayRef stride,
                          int64_t first, bool finalize) {
  const SlideGeom g = check_slide(out, windows, crop, stride, first, finalize);
  if (first == 0) out.zero_();
  if (g.B * g.C * g.H * g.W == 0) return;
  float* o = out.data_ptr<float>();
  const int64_t K = g.K;
  switch (windows.scalar_type()) {
    case at::kFloat: add_windows<float>(o, windows, g, first, K); break;
    case at::kDouble: add_windows<double>(o, windows, g, first, K); break;
    case at::kHalf: add_windows<c10::Half>(o, windows, g, first, K); break;
    case at::kBFloat16: add_windows<c10::BFloat16>(o, windows, g, first, K); break;
    default: TORCH_CHECK_TYPE(false, "slide_accumulate_: unsupported dtype ", windows.scalar_type());
  }
  if (finalize) divide_by_count(o, g);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(trashseg, m) {
  // out (B, C, H, W) f32 += grid windows first..first+K-1 of `windows` (K*B, C, min(crop, H), min(crop, W));
  // first == 0 zeroes out first; finalize divides by the per-pixel window count (mmseg slide_inference).
  m.def("slide_accumulate_(Tensor(a!) out, Tensor windows, int[] crop, int[] stride, int first, bool finalize) -> ()");
}

TORCH_LIBRARY_IMPL(trashseg, CPU, m) {
  m.impl("slide_accumulate_", &slide_accumulate_cpu);
}

}  // namespace trashseg
