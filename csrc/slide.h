// Sliding-window geometry shared by the CPU (slide.cpp) and CUDA (slide_cuda.cu) kernels of slide_accumulate_.
// mmseg's slide_inference (SPEC §4): per axis grids = max(size - crop + stride - 1, 0) // stride + 1; window i spans
// [i * stride, min(i * stride + crop, size)), then its start moves back to max(end - crop, 0). So every window has
// the extent min(crop, size), edge windows lie inside the image and an image smaller than the crop is one window.
#pragma once

#include <cstdint>

#include "common.h"  // TS_HD

namespace trashseg {

TS_HD int64_t slide_grids(int64_t size, int64_t crop, int64_t stride) {
  const int64_t span = size - crop + stride - 1;
  return (span > 0 ? span : 0) / stride + 1;
}

TS_HD int64_t slide_extent(int64_t size, int64_t crop) { return crop < size ? crop : size; }

TS_HD int64_t slide_start(int64_t i, int64_t size, int64_t crop, int64_t stride) {
  int64_t end = i * stride + crop;
  end = end < size ? end : size;
  const int64_t start = end - crop;
  return start > 0 ? start : 0;
}

// How many windows of one axis cover coordinate y, in O(1) (the count plane mmseg keeps is the product of the two
// axes' counts, so no plane is stored). With crop >= size there is one window. Otherwise the starts are i * stride
// for i = 0..L, L = (size - crop) // stride, plus one window shifted back to size - crop when stride does not divide
// size - crop; i * stride <= y < i * stride + crop  <=>  (y - crop) / stride < i <= y / stride.
TS_HD int64_t slide_axis_count(int64_t y, int64_t size, int64_t crop, int64_t stride) {
  if (crop >= size) return 1;
  const int64_t last = (size - crop) / stride;
  const int64_t hi = (y / stride) < last ? (y / stride) : last;
  const int64_t lo = y < crop ? 0 : (y - crop) / stride + 1;
  const int64_t n = hi >= lo ? hi - lo + 1 : 0;
  const bool shifted = (size - crop) % stride != 0;
  return n + ((shifted && y >= size - crop) ? 1 : 0);
}

}  // namespace trashseg
