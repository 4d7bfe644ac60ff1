// CPU kernels for the x86-64 (or other) baseline instruction set; see cpu_impl.inc.
#include <ATen/core/Tensor.h>

#define TS_ISA base
#include "cpu_impl.inc"

namespace trashseg {
const CpuKernels& cpu_kernels_base() {
  static const CpuKernels k{"baseline", &base::confusion, &base::tta, &base::argmax};
  return k;
}
}  // namespace trashseg
