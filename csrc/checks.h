// Argument checks shared by the CPU and CUDA entry points. The Python front (confusion.py, tta.py) checks the same
// things first with friendlier messages; these keep direct torch.ops.trashseg.* calls safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace trashseg {

inline bool is_int_dtype(at::ScalarType t) {
  return t == at::kByte || t == at::kChar || t == at::kShort || t == at::kInt || t == at::kLong;
}

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_confusion(const at::Tensor& pred, const at::Tensor& target, int64_t C, const at::Tensor& errors) {
  TORCH_CHECK_VALUE(C >= 1, "confusion_matrix: num_classes must be >= 1, got ", C);
  TORCH_CHECK_VALUE(target.dim() == 3, "confusion_matrix: target must be (B, H, W), got shape ", target.sizes());
  TORCH_CHECK_TYPE(is_int_dtype(target.scalar_type()),
                   "confusion_matrix: target must be uint8/int8/int16/int32/int64, got ", target.scalar_type());
  TORCH_CHECK_VALUE(pred.device() == target.device(), "confusion_matrix: pred is on ", pred.device(),
                    " but target is on ", target.device());
  TORCH_CHECK_VALUE(errors.device() == target.device() && errors.scalar_type() == at::kLong &&
                        errors.numel() == 4 && errors.is_contiguous(),
                    "confusion_matrix: errors must be a contiguous int64 tensor of 4 elements on the target's device");
  if (pred.dim() == 3) {
    TORCH_CHECK_TYPE(is_int_dtype(pred.scalar_type()),
                     "confusion_matrix: 3-D pred (labels) must be uint8/int8/int16/int32/int64, got ",
                     pred.scalar_type());
    TORCH_CHECK_VALUE(pred.sizes() == target.sizes(), "confusion_matrix: pred labels have shape ", pred.sizes(),
                      " but target has shape ", target.sizes());
  } else {
    TORCH_CHECK_VALUE(pred.dim() == 4, "confusion_matrix: pred must be labels (B, H, W) or logits (B, C, H, W), got ",
                      pred.dim(), "-D shape ", pred.sizes());
    TORCH_CHECK_TYPE(is_float_dtype(pred.scalar_type()),
                     "confusion_matrix: 4-D pred (logits) must be float32/float16/bfloat16/float64, got ",
                     pred.scalar_type());
    TORCH_CHECK_VALUE(pred.size(1) == C, "confusion_matrix: logits have ", pred.size(1),
                      " channels but num_classes is ", C);
    TORCH_CHECK_VALUE(pred.size(0) == target.size(0) && pred.size(2) == target.size(1) &&
                          pred.size(3) == target.size(2),
                      "confusion_matrix: logits have shape ", pred.sizes(), " but target has shape ", target.sizes());
  }
}

inline void check_tta(const at::Tensor& out, at::TensorList views, at::IntArrayRef flips) {
  TORCH_CHECK_VALUE(out.dim() == 4 && out.scalar_type() == at::kFloat && out.is_contiguous(),
                    "tta_accumulate_: out must be a contiguous float32 (B, C, H, W) tensor");
  TORCH_CHECK_VALUE(views.size() == flips.size(), "tta_accumulate_: got ", views.size(), " views but ", flips.size(),
                    " flips");
  for (size_t k = 0; k < views.size(); ++k) {
    const at::Tensor& v = views[k];
    TORCH_CHECK_VALUE(v.dim() == 4, "tta_accumulate_: views[", k, "] must be (B, C, h, w), got shape ", v.sizes());
    TORCH_CHECK_TYPE(is_float_dtype(v.scalar_type()), "tta_accumulate_: views[", k,
                     "] must be float32/float16/bfloat16/float64, got ", v.scalar_type());
    TORCH_CHECK_VALUE(v.size(0) == out.size(0) && v.size(1) == out.size(1), "tta_accumulate_: views[", k,
                      "] has shape ", v.sizes(), " but the output is ", out.sizes());
    TORCH_CHECK_VALUE(v.size(2) > 0 && v.size(3) > 0, "tta_accumulate_: views[", k, "] is empty: ", v.sizes());
    TORCH_CHECK_VALUE(v.device() == out.device(), "tta_accumulate_: views[", k, "] is on ", v.device(),
                      " but the output is on ", out.device());
  }
}

inline void check_argmax(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 4 && x.scalar_type() == at::kFloat,
                    "channel_argmax: x must be a float32 (B, C, H, W) tensor, got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK_VALUE(x.size(1) >= 1, "channel_argmax: x has no channels");
}

}  // namespace trashseg
