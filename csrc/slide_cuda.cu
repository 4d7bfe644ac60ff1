// CUDA kernels of slide_accumulate_ (schema, semantics and CPU kernel: slide.cpp). All offsets are int64.
//
// add: one launch per window, in grid order (overlapping windows must add in mmseg's order for the same bits, and
//   one launch per window keeps each launch free of write conflicts without atomics); one thread per 4 consecutive
//   columns of a window row (the row's float32 out segment and a contiguous window row are read as plain loads,
//   coalesced across the warp); windows of any strides and float dtype.
// finalize: one thread per 4 out elements of a row, dividing by the O(1) per-axis window counts (slide.h), no
//   count plane in memory.
// Floors on an H200 (~4.8 TB/s HBM3e, ~3.5-4 TB/s measured copy): a 640-px window of C=11 logits, B=1, float32:
//   read window 18 MB + read/write out 36 MB = 54 MB -> ~15 us; the finalize pass over a 4000x3000x11 sum: 1.06 GB
//   -> ~0.3 ms. The model's forward over the same window (ConvNeXt-T at 640 px) is milliseconds, so these are
//   not where slide inference spends its time; they exist to keep the memory bound (one sum, no count plane, no
//   padded full-size copy per window as mmseg's F.pad + add makes).
// Compile-checked for sm_90 (make test-heavy) and not run on a GPU so far: `make gpu-check` tests and times them.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "slide.h"
#include "slide_checks.h"

namespace trashseg {
namespace {

constexpr int kSlideThreads = 256;
constexpr int kCols = 4;  // columns per thread

__device__ __forceinline__ float sl_to_float(float v) { return v; }
__device__ __forceinline__ float sl_to_float(double v) { return static_cast<float>(v); }
__device__ __forceinline__ float sl_to_float(c10::Half v) { return static_cast<float>(v); }
__device__ __forceinline__ float sl_to_float(c10::BFloat16 v) { return static_cast<float>(v); }

// out[b, c, y0 + i, x0 + j] += win[b, c, i, j] for the window's B*C*eh rows; `groups` = ceil(ew / kCols) per row.
template <typename T>
__global__ void __launch_bounds__(kSlideThreads) slide_add_kernel(
    float* __restrict__ out, const T* __restrict__ win, int64_t sN, int64_t sC, int64_t sH, int64_t sW, int64_t C,
    int64_t H, int64_t W, int64_t eh, int64_t ew, int64_t y0, int64_t x0, int64_t groups, int64_t total) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = t % groups;
    const int64_t r = t / groups;  // (b * C + c) * eh + i
    const int64_t i = r % eh;
    const int64_t bc = r / eh;
    const int64_t c = bc % C;
    const int64_t b = bc / C;
    const int64_t j0 = g * kCols;
    float* o = out + (bc * H + y0 + i) * W + x0 + j0;
    const T* s = win + b * sN + c * sC + i * sH + j0 * sW;
    float v[kCols];
#pragma unroll
    for (int q = 0; q < kCols; ++q) v[q] = (j0 + q < ew) ? sl_to_float(s[q * sW]) : 0.f;  // all loads first
#pragma unroll
    for (int q = 0; q < kCols; ++q)
      if (j0 + q < ew) o[q] += v[q];
  }
}

__global__ void __launch_bounds__(kSlideThreads) slide_divide_kernel(
    float* __restrict__ out, int64_t H, int64_t W, int64_t crop_h, int64_t crop_w, int64_t stride_h,
    int64_t stride_w, int64_t groups, int64_t total) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = t % groups;
    const int64_t r = t / groups;  // (b * C + c) * H + y
    const int64_t y = r % H;
    const float cy = static_cast<float>(slide_axis_count(y, H, crop_h, stride_h));
    float* o = out + r * W;
#pragma unroll
    for (int q = 0; q < kCols; ++q) {
      const int64_t x = g * kCols + q;
      if (x < W) o[x] = o[x] / (cy * static_cast<float>(slide_axis_count(x, W, crop_w, stride_w)));
    }
  }
}

int64_t blocks_for(int64_t total) {
  // grid-stride loops: cap the grid (132 SMs x 16 blocks covers an H100/H200 many times over)
  return std::max<int64_t>(1, std::min<int64_t>((total + kSlideThreads - 1) / kSlideThreads, 132 * 16));
}

template <typename T>
void launch_adds(float* o, const at::Tensor& windows, const SlideGeom& g, int64_t first, cudaStream_t stream) {
  const T* base = static_cast<const T*>(windows.const_data_ptr());
  const int64_t groups = (g.ew + kCols - 1) / kCols;
  const int64_t total = g.B * g.C * g.eh * groups;
  for (int64_t k = 0; k < g.K; ++k) {
    const int64_t idx = first + k;
    const int64_t y0 = slide_start(idx / g.nx, g.H, g.crop_h, g.stride_h);
    const int64_t x0 = slide_start(idx % g.nx, g.W, g.crop_w, g.stride_w);
    slide_add_kernel<T><<<static_cast<unsigned>(blocks_for(total)), kSlideThreads, 0, stream>>>(
        o, base + k * g.B * windows.stride(0), windows.stride(0), windows.stride(1), windows.stride(2),
        windows.stride(3), g.C, g.H, g.W, g.eh, g.ew, y0, x0, groups, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void slide_accumulate_cuda(at::Tensor& out, const at::Tensor& windows, at::IntArrayRef crop, at::IntArrayRef stride,
                           int64_t first, bool finalize) {
  const SlideGeom g = check_slide(out, windows, crop, stride, first, finalize);
  c10::cuda::CUDAGuard guard(out.device());
  if (first == 0) out.zero_();
  if (g.B * g.C * g.H * g.W == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  float* o = out.data_ptr<float>();
  switch (windows.scalar_type()) {
    case at::kFloat: launch_adds<float>(o, windows, g, first, stream); break;
    case at::kDouble: launch_adds<double>(o, windows, g, first, stream); break;
    case at::kHalf: launch_adds<c10::Half>(o, windows, g, first, stream); break;
    case at::kBFloat16: launch_adds<c10::BFloat16>(o, windows, g, first, stream); break;
    default: TORCH_CHECK_TYPE(false, "slide_accumulate_: unsupported dtype ", windows.scalar_type());
  }
  if (finalize) {
    const int64_t groups = (g.W + kCols - 1) / kCols;
    const int64_t total = g.B * g.C * g.H * groups;
    slide_divide_kernel<<<static_cast<unsigned>(blocks_for(total)), kSlideThreads, 0, stream>>>(
        o, g.H, g.W, g.crop_h, g.crop_w, g.stride_h, g.stride_w, groups, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(trashseg, CUDA, m) {
  m.impl("slide_accumulate_", &slide_accumulate_cuda);
}

}  // namespace trashseg
