// CPU kernels built for AVX2 + FMA + F16C (x86-64 only); trashseg_ops.cpp uses them when the CPU has those.
#include <ATen/core/Tensor.h>

#include "cpu_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define TS_ISA avx2
#define TS_TARGET_PRAGMA _Pragma("GCC target(\"avx2,fma,f16c\")")
#define TS_HAVE_F16C 1
#include "cpu_impl.inc"

namespace trashseg {
const CpuKernels& cpu_kernels_avx2() {
  static const CpuKernels k{"avx2", &avx2::confusion, &avx2::tta, &avx2::argmax};
  return k;
}
}  // namespace trashseg
#else
namespace trashseg {
const CpuKernels& cpu_kernels_avx2() { return cpu_kernels_base(); }
}  // namespace trashseg
#endif
