// quantize_u8: a non-negative activation (a ReLU output) to uint8 with one scale, its own max / 255, for oneDNN's
// int8 convolutions (models/int8.py's Int8ConvModule: the decode head's 3×3 convolutions on an AMX CPU). Schema and
// CPU kernel; the pure-PyTorch reference and the Python API are in quant.py. CPU only: int8 inference here is a CPU
// path (a CUDA tensor takes the reference).
//
// Two passes over x (float32 or bfloat16, any dense layout): its max m, then q = clamp(round_half_even(x * inv), 0,
// 255) with scale = m / 255 (1 when m <= 0) and inv = 1 / scale, both in float32, so the reference's float32 ops
// give the same bits. q has x's strides (channels_last stays channels_last: oneDNN reads NHWC). NaN becomes 0. In
// plain torch this is four passes and a float32 copy (x * inv, round, clamp, to uint8): 0.2 s for the ConvNeXt-T
// head's (1, 2048, 128, 128) bf16 input on one core, against its int8 convolution's 0.17 s.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace trashseg {
namespace {

constexpr int64_t kGrain = 1 << 16;

// Branch-free loops over __restrict pointers, so that the compiler vectorises them (the data is random: a compare
// and branch per element ran 5x slower than these on a ReLU output).
template <typename T>
float max_range(const T* __restrict x, int64_t n) {
  float acc[16] = {0.f};  // 16 independent maxima: a vector register's worth, no loop-carried dependence
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 16; ++k) acc[k] = std::max(acc[k], static_cast<float>(x[i + k]));  // NaN never wins
  }
  float m = 0.f;
  for (; i < n; ++i) m = std::max(m, static_cast<float>(x[i]));
  for (int k = 0; k < 16; ++k) m = std::max(m, acc[k]);
  return m;
}

template <typename T>
float max_of(const T* x, int64_t n) {
  const int64_t chunks = (n + kGrain - 1) / kGrain;
  std::vector<float> part(static_cast<size_t>(std::max<int64_t>(chunks, 1)), 0.f);
  at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const int64_t lo = c * kGrain;
      part[c] = max_range(x + lo, std::min(kGrain, n - lo));
    }
  });
  return *std::max_element(part.begin(), part.end());
}

template <typename T>
void quantize_range(const T* __restrict x, uint8_t* __restrict q, int64_t n, float inv) {
  for (int64_t i = 0; i < n; ++i) {
    float v = static_cast<float>(x[i]) * inv;
    v = std::min(std::max(0.f, v), 255.f);  // (0 < v) ? v : 0, so NaN -> 0
    // Round half to even, as torch.round: adding and taking away 1.5 * 2^23 rounds v (< 2^22) to an integer in the
    // FPU's default mode; unlike std::nearbyint (a library call per element) the compiler vectorises it.
    v = (v + 12582912.f) - 12582912.f;
    q[i] = static_cast<uint8_t>(static_cast<int32_t>(v));
  }
}

// Both passes over n elements of x into q; the scale.
template <typename T>
float quantize(const T* x, uint8_t* q, int64_t n) {
  const float m = max_of(x, n);
  const float scale = m > 0.f ? m / 255.f : 1.f;
  const float inv = 1.f / scale;
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { quantize_range(x + b, q + b, e - b, inv); });
  return scale;
}

std::tuple<at::Tensor, at::Tensor> quantize_u8_cpu(const at::Tensor& x_in) {
  TORCH_CHECK_TYPE(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kBFloat16,
                   "quantize_u8: x must be float32 or bfloat16, got ", x_in.scalar_type());
  // One flat pass over the storage needs a dense layout; q then gets x's strides.
  const at::Tensor x = x_in.is_non_overlapping_and_dense() ? x_in : x_in.contiguous();
  at::Tensor q = at::empty_like(x, x.options().dtype(at::kByte));
  const float scale = x.scalar_type() == at::kFloat
                          ? quantize(x.const_data_ptr<float>(), q.data_ptr<uint8_t>(), x.numel())
                          : quantize(x.const_data_ptr<c10::BFloat16>(), q.data_ptr<uint8_t>(), x.numel());
  return {q, at::full({}, scale, x.options().dtype(at::kFloat))};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(trashseg, m) {
  // (q uint8 with x's strides, scale float32 0-d): q = clamp(round(x / scale), 0, 255), scale = max(x) / 255.
  m.def("quantize_u8(Tensor x) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(trashseg, CPU, m) {
  m.impl("quantize_u8", &quantize_u8_cpu);
}

}  // namespace trashseg
