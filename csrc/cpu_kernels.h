// CPU kernel entry points. The kernels in cpu_impl.inc are compiled twice (cpu_base.cpp: the x86-64 baseline,
// cpu_avx2.cpp: AVX2 + FMA + F16C) and trashseg_ops.cpp picks one at run time, so the cached build also runs on
// an older CPU than the one that built it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace trashseg {

struct CpuKernels {
  const char* isa;
  // cm (C, C) int64 zero-initialised on entry; pred: labels (B,H,W) or logits (B,C,H,W), contiguous.
  // Throws c10::ValueError for out-of-range labels.
  void (*confusion)(const at::Tensor& pred, const at::Tensor& target, int64_t num_classes, int64_t ignore_index,
                    at::Tensor& cm);
  // out (B, C, H, W) float32 contiguous; views (B, C, h, w) any strides, float dtypes.
  void (*tta)(at::Tensor& out, const std::vector<at::Tensor>& views, const std::vector<bool>& flips,
              bool accumulate, double scale);
  // x (B, C, H, W) float32 contiguous -> labels (B, H, W) uint8 or int64, maxval (B, H, W) float32 (max * scale).
  void (*argmax)(const at::Tensor& x, double scale, at::Tensor& labels, at::Tensor& maxval);
};

const CpuKernels& cpu_kernels_base();
const CpuKernels& cpu_kernels_avx2();

}  // namespace trashseg
