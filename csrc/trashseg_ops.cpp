// The op library: one schema per op (TORCH_LIBRARY), the CPU implementations here, the CUDA ones in
// cuda_kernels.cu (TORCH_LIBRARY_IMPL(trashseg, CUDA)); the dispatcher picks by device (extension-cpp layout).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"
#include "cpu_kernels.h"

namespace trashseg {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

std::atomic<const CpuKernels*>& cpu_slot() {
  static std::atomic<const CpuKernels*> slot{[] {
    const char* env = std::getenv("TRASHSEG_CPU_ISA");
    if (env && std::strcmp(env, "baseline") == 0) return &cpu_kernels_base();
    return cpu_has_avx2() ? &cpu_kernels_avx2() : &cpu_kernels_base();
  }()};
  return slot;
}

const CpuKernels& cpu() { return *cpu_slot().load(); }

// "" -> report; "baseline" / "avx2" / "auto" -> switch (tests run both builds in one process).
std::string cpu_isa(std::string request) {
  if (request == "baseline") {
    cpu_slot().store(&cpu_kernels_base());
  } else if (request == "avx2") {
    TORCH_CHECK_VALUE(cpu_has_avx2(), "cpu_isa: this CPU lacks AVX2/FMA/F16C");
    cpu_slot().store(&cpu_kernels_avx2());
  } else if (request == "auto") {
    cpu_slot().store(cpu_has_avx2() ? &cpu_kernels_avx2() : &cpu_kernels_base());
  } else {
    TORCH_CHECK_VALUE(request.empty(), "cpu_isa: expected '', 'auto', 'baseline' or 'avx2', got '", request, "'");
  }
  return cpu().isa;
}

at::Tensor confusion_matrix_cpu(const at::Tensor& pred, const at::Tensor& target, int64_t num_classes,
                                int64_t ignore_index, at::Tensor& errors) {
  check_confusion(pred, target, num_classes, errors);
  at::Tensor cm = at::zeros({num_classes, num_classes}, target.options().dtype(at::kLong));
  const at::Tensor p = pred.contiguous();
  const at::Tensor t = target.contiguous();
  cpu().confusion(p, t, num_classes, ignore_index, cm);
  return cm;
}

void tta_accumulate_cpu(at::Tensor& out, at::TensorList views, at::IntArrayRef flips, bool accumulate,
                        double scale) {
  check_tta(out, views, flips);
  if (views.empty()) {
    if (!accumulate) out.zero_();
    if (scale != 1.0) out.mul_(scale);
    return;
  }
  std::vector<at::Tensor> vs(views.begin(), views.end());  // any strides: the kernel reads through them
  std::vector<bool> fl;
  for (int64_t f : flips) fl.push_back(f != 0);
  cpu().tta(out, vs, fl, accumulate, scale);
}

std::tuple<at::Tensor, at::Tensor> channel_argmax_cpu(const at::Tensor& x, double scale, bool int64_labels) {
  check_argmax(x);
  const at::Tensor xc = x.contiguous();
  TORCH_CHECK_VALUE(int64_labels || x.size(1) <= 256, "channel_argmax: uint8 labels need <= 256 classes, got ",
                    x.size(1));
  at::Tensor labels = at::empty({x.size(0), x.size(2), x.size(3)}, x.options().dtype(int64_labels ? at::kLong : at::kByte));
  at::Tensor maxval = at::empty({x.size(0), x.size(2), x.size(3)}, x.options());
  cpu().argmax(xc, scale, labels, maxval);
  return {labels, maxval};
}

}  // namespace

TORCH_LIBRARY(trashseg, m) {
  // rows = ground truth, cols = prediction; errors: see common.h (CUDA records into it, CPU raises at once)
  m.def("confusion_matrix(Tensor pred, Tensor target, int num_classes, int ignore_index, Tensor(a!) errors) -> Tensor");
  // out = (accumulate ? out : 0) + sum_k softmax(resize(views[k])) un-flipped, then out *= scale
  m.def("tta_accumulate_(Tensor(a!) out, Tensor[] views, int[] flips, bool accumulate, float scale) -> ()");
  // (labels uint8 or int64, max * scale), NaN and ties as torch.argmax
  m.def("channel_argmax(Tensor x, float scale, bool int64_labels) -> (Tensor, Tensor)");
  m.def("cpu_isa(str request) -> str", &cpu_isa);
}

TORCH_LIBRARY_IMPL(trashseg, CPU, m) {
  m.impl("confusion_matrix", &confusion_matrix_cpu);
  m.impl("tta_accumulate_", &tta_accumulate_cpu);
  m.impl("channel_argmax", &channel_argmax_cpu);
}

}  // namespace trashseg
