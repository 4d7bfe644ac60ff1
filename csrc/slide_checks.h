// Argument checks of slide_accumulate_ shared by the CPU and CUDA entry points (slide.py checks the same first, with
// the caller's names); they keep direct torch.ops.trashseg.slide_accumulate_ calls memory-safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "checks.h"
#include "slide.h"

namespace trashseg {

struct SlideGeom {
  int64_t B, C, H, W, crop_h, crop_w, stride_h, stride_w, eh, ew, ny, nx, K;
};

inline SlideGeom check_slide(const at::Tensor& out, const at::Tensor& windows, at::IntArrayRef crop,
                             at::IntArrayRef stride, int64_t first, bool finalize) {
  TORCH_CHECK_VALUE(out.dim() == 4 && out.scalar_type() == at::kFloat && out.is_contiguous(),
                    "slide_accumulate_: out must be a contiguous float32 (B, C, H, W) tensor, got ",
                    out.scalar_type(), " ", out.sizes());
  TORCH_CHECK_VALUE(!out.requires_grad() && !windows.requires_grad(),
                    "slide_accumulate_: has no autograd; pass tensors that do not require grad "
                    "(torch.no_grad() or .detach())");
  TORCH_CHECK_VALUE(crop.size() == 2 && stride.size() == 2, "slide_accumulate_: crop and stride must be (h, w)");
  TORCH_CHECK_VALUE(crop[0] >= 1 && crop[1] >= 1 && stride[0] >= 1 && stride[1] >= 1,
                    "slide_accumulate_: crop and stride must be >= 1, got crop ", crop, " stride ", stride);
  TORCH_CHECK_VALUE(stride[0] <= crop[0] && stride[1] <= crop[1], "slide_accumulate_: stride ", stride,
                    " larger than crop ", crop, " leaves pixels that no window covers");
  TORCH_CHECK_VALUE(windows.dim() == 4, "slide_accumulate_: windows must be (K*B, C, h, w), got ", windows.sizes());
  TORCH_CHECK_TYPE(is_float_dtype(windows.scalar_type()),
                   "slide_accumulate_: windows must be float32/float16/bfloat16/float64, got ", windows.scalar_type());
  TORCH_CHECK_VALUE(windows.device() == out.device(), "slide_accumulate_: windows are on ", windows.device(),
                    " but out is on ", out.device());
  SlideGeom g;
  g.B = out.size(0);
  g.C = out.size(1);
  g.H = out.size(2);
  g.W = out.size(3);
  g.crop_h = crop[0];
  g.crop_w = crop[1];
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  TORCH_CHECK_VALUE(g.B >= 1 && g.H >= 1 && g.W >= 1, "slide_accumulate_: out is empty: ", out.sizes());
  g.eh = slide_extent(g.H, g.crop_h);
  g.ew = slide_extent(g.W, g.crop_w);
  g.ny = slide_grids(g.H, g.crop_h, g.stride_h);
  g.nx = slide_grids(g.W, g.crop_w, g.stride_w);
  TORCH_CHECK_VALUE(windows.size(0) % g.B == 0 && windows.size(0) > 0 && windows.size(1) == g.C &&
                        windows.size(2) == g.eh && windows.size(3) == g.ew,
                    "slide_accumulate_: windows have shape ", windows.sizes(), " but out ", out.sizes(),
                    " with crop ", crop, " needs (K*", g.B, ", ", g.C, ", ", g.eh, ", ", g.ew, ")");
  g.K = windows.size(0) / g.B;
  const int64_t total = g.ny * g.nx;
  TORCH_CHECK_VALUE(first >= 0 && first + g.K <= total, "slide_accumulate_: windows ", first, "..",
                    first + g.K - 1, " outside the grid of ", total, " windows");
  TORCH_CHECK_VALUE(!finalize || first + g.K == total, "slide_accumulate_: finalize needs the last window (",
                    total - 1, "), got windows up to ", first + g.K - 1);
  return g;
}

}  // namespace trashseg
