// CUDA implementations of the trashseg ops (schemas in trashseg_ops.cpp). All offsets are int64.
//
// confusion_matrix: a persistent grid; each warp takes 32 * VEC consecutive pixels per step (16-byte loads of
//   every logit plane, argmax in registers), warp-aggregated atomics (__match_any_sync) into per-warp shared-memory
//   histograms, one flush of each block's histogram into the int64 matrix. Out-of-range labels are counted into
//   the errors tensor (see common.h) instead of a host sync; ops.check_errors() reads it.
// tta_accumulate_: one thread per output pixel; up to kMaxViews views per launch, their descriptors passed by
//   value; per view: bilinear taps (as ATen's CUDA upsample_bilinear2d), softmax over channels in registers,
//   running sum in registers; one write per output element.
// channel_argmax: one thread per VEC pixels, argmax over channels, uint8 or int64 labels + scaled max.
//
// Floors on an H100 (KINDS.md: ~3.0 TB/s device copy, read + write), for bench/bench_ops.py's sizes:
//   confusion from 16x11x512x512 f32 logits + uint8 target: 189 MB read -> ~63 us; labels (int64): 38 MB -> ~13 us.
//   TTA merge, B=8 C=11, views 256..640 x flip (623 MB f32) -> 512^2 (92 MB written): 715 MB -> ~0.24 ms; the
//   arithmetic (~184 M pixel-class-views x ~25 flops = 4.6 GFLOP) stays under that. The reference moves ~6 GB
//   (per view: resize, softmax, flip as full-size maps; then stack + mean): ~2 ms.
// Not yet run on a GPU when written (compile-checked for sm_90 only); `make gpu-check` measures them.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <limits>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "checks.h"
#include "common.h"

namespace trashseg {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxViews = 16;

struct DevInfo {
  int sms = 0;
  int smem_optin = 0;
};

DevInfo dev_info(int dev) {
  static std::mutex mu;
  static std::unordered_map<int, DevInfo> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(dev);
  if (it != cache.end()) return it->second;
  DevInfo d;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  cache[dev] = d;
  return d;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(double v) { return static_cast<float>(v); }
__device__ __forceinline__ float to_float(c10::Half v) { return static_cast<float>(v); }
__device__ __forceinline__ float to_float(c10::BFloat16 v) { return static_cast<float>(v); }

template <typename T>
__device__ __forceinline__ float ldf(const T* p) {
  return to_float(p[0]);
}
template <>
__device__ __forceinline__ float ldf<float>(const float* p) {
  return __ldg(p);
}

// VEC consecutive elements (16 bytes, 16-byte aligned) -> float
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = ldf(p);
  } else {
    static_assert(sizeof(T) * VEC == 16, "load_vec reads 16 bytes");
    union {
      uint4 raw;
      T e[VEC];
    } u;
    u.raw = __ldg(reinterpret_cast<const uint4*>(p));
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = to_float(u.e[k]);
  }
}

// ------------------------------------------------------------------ confusion matrix

__device__ __forceinline__ void record_error(long long* err, int count_slot, int value_slot, long long value) {
  atomicAdd(reinterpret_cast<unsigned long long*>(err + count_slot), 1ULL);
  atomicCAS(reinterpret_cast<unsigned long long*>(err + value_slot),
            static_cast<unsigned long long>(std::numeric_limits<long long>::min()),
            static_cast<unsigned long long>(value));
}

// -1: not counted (ignored, out of range). Otherwise t * C + p.
__device__ __forceinline__ int make_bin(long long t, long long p, int C, long long ignore, long long* err) {
  if (t == ignore) return -1;
  if (static_cast<unsigned long long>(t) >= static_cast<unsigned long long>(C)) {
    record_error(err, kErrTargetCount, kErrTargetValue, t);
    return -1;
  }
  if (static_cast<unsigned long long>(p) >= static_cast<unsigned long long>(C)) {
    record_error(err, kErrPredCount, kErrPredValue, p);
    return -1;
  }
  return static_cast<int>(t) * C + static_cast<int>(p);
}

// Called by all 32 lanes (the loops below are warp-uniform). Lanes with the same bin add once, by their leader:
// a warp of background pixels costs one atomic, not 32 serialised ones.
template <typename CountT>
__device__ __forceinline__ void warp_add(CountT* hist, int bin) {
  const unsigned peers = __match_any_sync(0xffffffffu, bin);
  const int lane = threadIdx.x & 31;
  if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(hist + bin, static_cast<CountT>(__popc(peers)));
}

// Argmax over C channels (stride HW) for VEC adjacent pixels: the value and index of the first maximum, as
// torch.argmax (argmax_takes decides ties and NaN). Shared by the fused confusion matrix and the TTA argmax.
// float64 logits compare in float64 (rounding to float32 first would tie 1 and 1 + 1e-12).
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <int VEC>
__device__ __forceinline__ void load_vec(const double* p, double (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = __ldg(p);
  } else {
    static_assert(VEC == 2, "load_vec reads 16 bytes");
    const double2 d = __ldg(reinterpret_cast<const double2*>(p));
    out[0] = d.x;
    out[1] = d.y;
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void channel_argmax(const T* base, int C, int64_t HW, acc_t<T> (&best)[VEC],
                                               int (&idx)[VEC]) {
  if constexpr (std::is_same_v<T, double>) {
    load_vec<VEC>(base, best);
  } else {
    load_vec<T, VEC>(base, best);
  }
#pragma unroll
  for (int k = 0; k < VEC; ++k) idx[k] = 0;
#pragma unroll 4
  for (int c = 1; c < C; ++c) {
    acc_t<T> v[VEC];
    if constexpr (std::is_same_v<T, double>) {
      load_vec<VEC>(base + static_cast<int64_t>(c) * HW, v);
    } else {
      load_vec<T, VEC>(base + static_cast<int64_t>(c) * HW, v);
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      if (argmax_takes(v[k], best[k])) {
        best[k] = v[k];
        idx[k] = c;
      }
    }
  }
}

template <typename TP, typename TT, int VEC, bool LOGITS, bool SHARED>
__global__ void __launch_bounds__(kThreads) confusion_kernel(const TP* __restrict__ pred, const TT* __restrict__ tgt,
                                                              int64_t N, int64_t HW, int C, long long ignore,
                                                              int nrep, unsigned long long* __restrict__ cm,
                                                              long long* __restrict__ err) {
  extern __shared__ unsigned int smem[];
  const int CC = C * C;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  if constexpr (SHARED) {
    for (int k = threadIdx.x; k < CC * nrep; k += blockDim.x) smem[k] = 0u;
    __syncthreads();
  }
  unsigned int* hist = smem + (warp % nrep) * CC;

  const int64_t per_group = 32 * VEC;
  const int64_t groups = (N + per_group - 1) / per_group;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp; g < groups; g += warps_total) {
    const int64_t i0 = g * per_group + static_cast<int64_t>(lane) * VEC;
    long long lab[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) lab[k] = 0;
    if constexpr (LOGITS) {
      // VEC > 1 only when HW % VEC == 0: a lane's VEC pixels are all valid or all past the end, in one image
      if (i0 < N) {
        const int64_t b = i0 / HW;
        const TP* base = pred + b * static_cast<int64_t>(C) * HW + (i0 - b * HW);
        acc_t<TP> best[VEC];
        int idx[VEC];
        channel_argmax<TP, VEC>(base, C, HW, best, idx);
#pragma unroll
        for (int k = 0; k < VEC; ++k) lab[k] = idx[k];
      }
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        if (i0 + k < N) lab[k] = static_cast<long long>(pred[i0 + k]);
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const int bin = (i0 + k < N) ? make_bin(static_cast<long long>(tgt[i0 + k]), lab[k], C, ignore, err) : -1;
      if constexpr (SHARED) {
        warp_add(hist, bin);
      } else {
        warp_add(cm, bin);
      }
    }
  }
  if constexpr (SHARED) {
    __syncthreads();
    for (int k = threadIdx.x; k < CC; k += blockDim.x) {
      unsigned long long s = 0;
      for (int r = 0; r < nrep; ++r) s += smem[r * CC + k];
      if (s) atomicAdd(cm + k, s);
    }
  }
}

template <typename TP, typename TT, int VEC, bool LOGITS>
void launch_confusion(const at::Tensor& pred, const at::Tensor& target, int64_t N, int64_t HW, int C,
                      long long ignore, at::Tensor& cm, at::Tensor& errors, const DevInfo& di,
                      cudaStream_t stream) {
  const int CC = C * C;
  const size_t one = static_cast<size_t>(CC) * sizeof(unsigned int);
  const int64_t per_block = static_cast<int64_t>(kThreads) * VEC;
  // A persistent grid of as many blocks as fit on the GPU at once, asked of the occupancy API for the variant
  // launched (ptxas gives these kernels 40-44 registers, so the 8 blocks of 256 per SM a 32-register guess
  // assumed do not all fit), and enough blocks that no block's 32-bit counters can wrap.
  auto grid_for = [&](auto kernel, size_t smem) {
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
    int64_t blocks = std::min<int64_t>((N + per_block - 1) / per_block,
                                       static_cast<int64_t>(di.sms) * std::max(per_sm, 1));
    blocks = std::max<int64_t>(blocks, (N >> 31) + 1);
    return static_cast<int>(std::min<int64_t>(blocks, std::numeric_limits<int>::max()));
  };
  const TP* p = pred.const_data_ptr<TP>();
  const TT* t = target.const_data_ptr<TT>();
  auto* out = reinterpret_cast<unsigned long long*>(cm.data_ptr<int64_t>());
  auto* err = reinterpret_cast<long long*>(errors.data_ptr<int64_t>());
  if (one <= 48 * 1024) {
    // per-warp copies while they fit in 48 KB: no contention between warps
    const int nrep = static_cast<int>(std::max<size_t>(1, std::min<size_t>(kWarps, (48 * 1024) / one)));
    auto kernel = confusion_kernel<TP, TT, VEC, LOGITS, true>;
    kernel<<<grid_for(kernel, one * nrep), kThreads, one * nrep, stream>>>(p, t, N, HW, C, ignore, nrep, out, err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else if (one <= static_cast<size_t>(di.smem_optin)) {
    auto kernel = confusion_kernel<TP, TT, VEC, LOGITS, true>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(one)));
    kernel<<<grid_for(kernel, one), kThreads, one, stream>>>(p, t, N, HW, C, ignore, 1, out, err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    // very many classes: straight to global memory
    auto kernel = confusion_kernel<TP, TT, VEC, LOGITS, false>;
    kernel<<<grid_for(kernel, 0), kThreads, 0, stream>>>(p, t, N, HW, C, ignore, 1, out, err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

#define TS_CUDA_INT_CASES(DT, NAME, ...)                                                   \
  switch (DT) {                                                                            \
    case at::kByte: { using NAME = uint8_t; __VA_ARGS__(); break; }                        \
    case at::kChar: { using NAME = int8_t; __VA_ARGS__(); break; }                         \
    case at::kShort: { using NAME = int16_t; __VA_ARGS__(); break; }                       \
    case at::kInt: { using NAME = int32_t; __VA_ARGS__(); break; }                         \
    case at::kLong: { using NAME = int64_t; __VA_ARGS__(); break; }                        \
    default: TORCH_CHECK_TYPE(false, "trashseg: unsupported integer dtype ", DT);          \
  }

#define TS_CUDA_FLOAT_CASES(DT, NAME, ...)                                                 \
  switch (DT) {                                                                            \
    case at::kFloat: { using NAME = float; __VA_ARGS__(); break; }                         \
    case at::kDouble: { using NAME = double; __VA_ARGS__(); break; }                       \
    case at::kHalf: { using NAME = c10::Half; __VA_ARGS__(); break; }                      \
    case at::kBFloat16: { using NAME = c10::BFloat16; __VA_ARGS__(); break; }              \
    default: TORCH_CHECK_TYPE(false, "trashseg: unsupported floating dtype ", DT);         \
  }

at::Tensor confusion_matrix_cuda(const at::Tensor& pred, const at::Tensor& target, int64_t num_classes,
                                 int64_t ignore_index, at::Tensor& errors) {
  check_confusion(pred, target, num_classes, errors);
  TORCH_CHECK_VALUE(num_classes <= 46340, "confusion_matrix: num_classes too large for the CUDA kernel (C*C >= 2^31)");
  c10::cuda::CUDAGuard guard(target.device());
  at::Tensor cm = at::zeros({num_classes, num_classes}, target.options().dtype(at::kLong));
  const int64_t N = target.numel();
  if (N == 0) return cm;
  const at::Tensor p = pred.contiguous();
  const at::Tensor t = target.contiguous();
  const int64_t HW = t.size(1) * t.size(2);
  const int C = static_cast<int>(num_classes);
  const long long ignore = static_cast<long long>(ignore_index);
  const DevInfo di = dev_info(target.get_device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto tdt = t.scalar_type();
  if (p.dim() == 3) {
    const auto pdt = p.scalar_type();
    TS_CUDA_INT_CASES(tdt, tgt_t, [&] {
      TS_CUDA_INT_CASES(pdt, pred_t, [&] {
        launch_confusion<pred_t, tgt_t, 4, false>(p, t, N, HW, C, ignore, cm, errors, di, stream);
      });
    });
  } else {
    const auto pdt = p.scalar_type();
    TS_CUDA_INT_CASES(tdt, tgt_t, [&] {
      TS_CUDA_FLOAT_CASES(pdt, pred_t, [&] {
        constexpr int VEC = 16 / sizeof(pred_t);
        const bool aligned = reinterpret_cast<uintptr_t>(p.const_data_ptr()) % 16 == 0;
        if (aligned && HW % VEC == 0) {
          launch_confusion<pred_t, tgt_t, VEC, true>(p, t, N, HW, C, ignore, cm, errors, di, stream);
        } else {
          launch_confusion<pred_t, tgt_t, 1, true>(p, t, N, HW, C, ignore, cm, errors, di, stream);
        }
      });
    });
  }
  return cm;
}

// ------------------------------------------------------------------ channel argmax

template <typename OutT, int VEC>
__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* __restrict__ x, int64_t N, int64_t HW, int C,
                                                           float scale, OutT* __restrict__ labels,
                                                           float* __restrict__ maxval) {
  const int64_t groups = (N + VEC - 1) / VEC;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = g * VEC;
    const int64_t b = i0 / HW;
    const float* base = x + b * static_cast<int64_t>(C) * HW + (i0 - b * HW);
    float best[VEC];
    int idx[VEC];
    channel_argmax<float, VEC>(base, C, HW, best, idx);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      labels[i0 + k] = static_cast<OutT>(idx[k]);
      maxval[i0 + k] = best[k] * scale;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> channel_argmax_cuda(const at::Tensor& x, double scale, bool int64_labels) {
  check_argmax(x);
  TORCH_CHECK_VALUE(int64_labels || x.size(1) <= 256, "channel_argmax: uint8 labels need <= 256 classes, got ",
                    x.size(1));
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor labels =
      at::empty({x.size(0), x.size(2), x.size(3)}, x.options().dtype(int64_labels ? at::kLong : at::kByte));
  at::Tensor maxval = at::empty({x.size(0), x.size(2), x.size(3)}, x.options());
  const int64_t HW = x.size(2) * x.size(3);
  const int64_t N = x.size(0) * HW;
  if (N == 0) return {labels, maxval};
  const int C = static_cast<int>(x.size(1));
  const DevInfo di = dev_info(x.get_device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vec = HW % 4 == 0 && reinterpret_cast<uintptr_t>(xc.const_data_ptr()) % 16 == 0;
  const int64_t groups = vec ? N / 4 : N;
  const int blocks = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>((groups + kThreads - 1) / kThreads, static_cast<int64_t>(di.sms) * 16)));
  const float sc = static_cast<float>(scale);
  auto go = [&](auto* out) {
    using OutT = std::remove_pointer_t<decltype(out)>;
    if (vec) {
      argmax_kernel<OutT, 4><<<blocks, kThreads, 0, stream>>>(xc.const_data_ptr<float>(), N, HW, C, sc, out,
                                                              maxval.data_ptr<float>());
    } else {
      argmax_kernel<OutT, 1><<<blocks, kThreads, 0, stream>>>(xc.const_data_ptr<float>(), N, HW, C, sc, out,
                                                              maxval.data_ptr<float>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (int64_labels) {
    go(labels.data_ptr<int64_t>());
  } else {
    go(labels.data_ptr<uint8_t>());
  }
  return {labels, maxval};
}

// ------------------------------------------------------------------ TTA merge

enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kF64 = 3 };

struct ViewDesc {
  const void* data;
  int64_t h, w, sB, sC, sH, sW;
  float scale_h, scale_w;
  int dtype;
  int flip;
  int same_h, same_w;  // that dimension is not resized: copy (tap 0 only; 0 * inf from tap 1 would be NaN)
};

struct ViewBatch {
  ViewDesc v[kMaxViews];
  int n;
};

// Bilinear sample at the four taps, in ATen's CUDA upsample_bilinear2d order of operations.
// A dimension of unchanged size (SH / SW) is a copy, as in F.interpolate: its second tap is not read at all, so a
// ±inf there cannot reach this pixel as 0 * inf = NaN. Compile-time flags: runtime ones stayed live through the
// channel loop and made ptxas spill (8-16 bytes of stack).
template <typename T, bool SH, bool SW>
__device__ __forceinline__ float bilerp(const T* p, int64_t o00, int64_t o01, int64_t o10, int64_t o11, float wy0,
                                       float wy1, float wx0, float wx1) {
  const float top = SW ? ldf(p + o00) : wx0 * ldf(p + o00) + wx1 * ldf(p + o01);
  if constexpr (SH) return top;
  const float bot = SW ? ldf(p + o10) : wx0 * ldf(p + o10) + wx1 * ldf(p + o11);
  return wy0 * top + wy1 * bot;
}

// Adds one view's softmax probabilities at pixel (b, y, x) into acc (MAXC > 0: registers) or, for MAXC == 0,
// straight into the output column `o` (stride HW), first == true meaning "write, don't add".
template <typename T, int MAXC, bool SH, bool SW>
__device__ __forceinline__ void add_view_sized(const ViewDesc& v, int64_t b, int64_t y, int64_t x, int64_t W, int C,
                                         float (&acc)[MAXC > 0 ? MAXC : 1], float* o, int64_t HW, bool first) {
  const Taps ty = bilinear_taps(v.scale_h, y, v.h);
  const int64_t xs = v.flip ? W - 1 - x : x;  // un-flip: output column x reads the view's column W-1-x
  const Taps tx = bilinear_taps(v.scale_w, xs, v.w);
  const T* p = static_cast<const T*>(v.data) + b * v.sB;
  const int64_t o00 = ty.i0 * v.sH + tx.i0 * v.sW;
  const int64_t o01 = ty.i0 * v.sH + tx.i1 * v.sW;
  const int64_t o10 = ty.i1 * v.sH + tx.i0 * v.sW;
  const int64_t o11 = ty.i1 * v.sH + tx.i1 * v.sW;
  if constexpr (MAXC > 0) {
    float val[MAXC];
    float m = -INFINITY;
#pragma unroll
    for (int c = 0; c < MAXC; ++c) {
      if (c < C) {
        val[c] = bilerp<T, SH, SW>(p + c * v.sC, o00, o01, o10, o11, ty.w0, ty.w1, tx.w0, tx.w1);
        m = val[c] > m ? val[c] : m;  // a NaN is skipped here but poisons the sum below, as in torch.softmax
      }
    }
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < MAXC; ++c) {
      if (c < C) {
        val[c] = expf(val[c] - m);
        s += val[c];
      }
    }
    const float inv = 1.f / s;
#pragma unroll
    for (int c = 0; c < MAXC; ++c)
      if (c < C) acc[c] += val[c] * inv;
  } else {
    // any C: online max/sum in one pass, then recompute each value to accumulate.
    // Non-finite logits come out as torch.softmax (and the MAXC > 0 path and the CPU kernel) give them:
    //  - m starts at -FLT_MAX, not -inf: a -inf logit then adds expf(-inf) = 0. (With m = -inf, a -inf in channel 0
    //    would make expf(-inf - -inf) = NaN and poison the whole pixel, where torch gives that class probability 0.)
    //    All -inf: s stays 0, 1/s = inf, q = expf(-inf - m) * inf = 0 * inf = NaN for every channel, as torch.
    //  - a +inf maximum makes torch's sum exp(inf - inf) = NaN: the whole pixel is NaN (the "+ 1.f" below alone
    //    would give s = 1 and NaN in the +inf channel only): set after the loop.
    //  - NaN: never a new maximum; expf(NaN - m) = NaN poisons the sum.
    // The loop body has no branch for these cases on purpose: one more branch makes ptxas drop to 64 registers and
    // spill.
    float m = -FLT_MAX, s = 0.f;
    for (int c = 0; c < C; ++c) {
      const float val = bilerp<T, SH, SW>(p + c * v.sC, o00, o01, o10, o11, ty.w0, ty.w1, tx.w0, tx.w1);
      if (val > m) {
        s = s * expf(m - val) + 1.f;
        m = val;
      } else {
        s += expf(val - m);  // NaN val -> NaN sum
      }
    }
    if (m == INFINITY) s = __int_as_float(0x7fffffff);  // NaN
    const float inv = 1.f / s;
    for (int c = 0; c < C; ++c) {
      const float val = bilerp<T, SH, SW>(p + c * v.sC, o00, o01, o10, o11, ty.w0, ty.w1, tx.w0, tx.w1);
      const float q = expf(val - m) * inv;
      o[c * HW] = first ? q : o[c * HW] + q;
    }
  }
}

// One view's dimensions of unchanged size select the copy variant once per view, outside the channel loops.
template <typename T, int MAXC>
__device__ __forceinline__ void add_view(const ViewDesc& v, int64_t b, int64_t y, int64_t x, int64_t W, int C,
                                         float (&acc)[MAXC > 0 ? MAXC : 1], float* o, int64_t HW, bool first) {
  if (v.same_h) {
    if (v.same_w) add_view_sized<T, MAXC, true, true>(v, b, y, x, W, C, acc, o, HW, first);
    else add_view_sized<T, MAXC, true, false>(v, b, y, x, W, C, acc, o, HW, first);
  } else {
    if (v.same_w) add_view_sized<T, MAXC, false, true>(v, b, y, x, W, C, acc, o, HW, first);
    else add_view_sized<T, MAXC, false, false>(v, b, y, x, W, C, acc, o, HW, first);
  }
}

template <int MAXC>
__global__ void __launch_bounds__(kThreads) tta_kernel(float* __restrict__ out, const __grid_constant__ ViewBatch views, int64_t B,
                                                        int C, int64_t H, int64_t W, bool accumulate, float scale) {
  const int64_t HW = H * W;
  const int64_t P = B * HW;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < P;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / HW;
    const int64_t r = i - b * HW;
    const int64_t y = r / W;
    const int64_t x = r - y * W;
    float* o = out + b * static_cast<int64_t>(C) * HW + r;
    float acc[MAXC > 0 ? MAXC : 1];
#pragma unroll
    for (int c = 0; c < (MAXC > 0 ? MAXC : 1); ++c) acc[c] = 0.f;
    for (int k = 0; k < views.n; ++k) {
      const ViewDesc& v = views.v[k];
      const bool first = !accumulate && k == 0;
      switch (v.dtype) {
        case kF16: add_view<c10::Half, MAXC>(v, b, y, x, W, C, acc, o, HW, first); break;
        case kBF16: add_view<c10::BFloat16, MAXC>(v, b, y, x, W, C, acc, o, HW, first); break;
        case kF64: add_view<double, MAXC>(v, b, y, x, W, C, acc, o, HW, first); break;
        default: add_view<float, MAXC>(v, b, y, x, W, C, acc, o, HW, first); break;
      }
    }
    if constexpr (MAXC > 0) {
#pragma unroll
      for (int c = 0; c < MAXC; ++c) {
        if (c < C) {
          float* q = o + c * HW;
          *q = ((accumulate ? *q : 0.f) + acc[c]) * scale;
        }
      }
    } else {
      if (scale != 1.f)
        for (int c = 0; c < C; ++c) o[c * HW] *= scale;
    }
  }
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return kF16;
    case at::kBFloat16: return kBF16;
    case at::kDouble: return kF64;
    default: return kF32;
  }
}

void tta_accumulate_cuda(at::Tensor& out, at::TensorList views, at::IntArrayRef flips, bool accumulate,
                         double scale) {
  check_tta(out, views, flips);
  TORCH_CHECK_VALUE(out.size(1) < (int64_t{1} << 31), "tta_accumulate_: too many channels");
  c10::cuda::CUDAGuard guard(out.device());
  const int64_t B = out.size(0), H = out.size(2), W = out.size(3);
  const int C = static_cast<int>(out.size(1));
  const int64_t P = B * H * W;
  const int64_t nv = static_cast<int64_t>(views.size());
  if (P == 0 || C == 0) return;
  if (nv == 0) {
    if (!accumulate) out.zero_();
    if (scale != 1.0) out.mul_(scale);
    return;
  }
  const DevInfo di = dev_info(out.get_device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int blocks = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>((P + kThreads - 1) / kThreads, static_cast<int64_t>(di.sms) * 32)));
  for (int64_t start = 0; start < nv; start += kMaxViews) {
    const int64_t n = std::min<int64_t>(kMaxViews, nv - start);
    ViewBatch vb{};
    vb.n = static_cast<int>(n);
    for (int64_t k = 0; k < n; ++k) {
      const at::Tensor& t = views[start + k];
      ViewDesc& d = vb.v[k];
      d.data = t.const_data_ptr();
      d.h = t.size(2);
      d.w = t.size(3);
      d.sB = t.stride(0);
      d.sC = t.stride(1);
      d.sH = t.stride(2);
      d.sW = t.stride(3);
      d.scale_h = bilinear_scale(d.h, H);
      d.scale_w = bilinear_scale(d.w, W);
      d.dtype = dtype_code(t.scalar_type());
      d.flip = flips[start + k] != 0;
      d.same_h = d.h == H;
      d.same_w = d.w == W;
    }
    const bool acc_now = accumulate || start > 0;
    const bool last = start + n >= nv;
    const float sc = last ? static_cast<float>(scale) : 1.f;
    float* o = out.data_ptr<float>();
    if (C <= 16) {
      tta_kernel<16><<<blocks, kThreads, 0, stream>>>(o, vb, B, C, H, W, acc_now, sc);
    } else if (C <= 32) {
      tta_kernel<32><<<blocks, kThreads, 0, stream>>>(o, vb, B, C, H, W, acc_now, sc);
    } else {
      tta_kernel<0><<<blocks, kThreads, 0, stream>>>(o, vb, B, C, H, W, acc_now, sc);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(trashseg, CUDA, m) {
  m.impl("confusion_matrix", &confusion_matrix_cuda);
  m.impl("tta_accumulate_", &tta_accumulate_cuda);
  m.impl("channel_argmax", &channel_argmax_cuda);
}

}  // namespace trashseg
