"""Fused segmentation ops: confusion matrix (+ mIoU), multi-scale / flip TTA merging, sliding-window inference.

    from csrc import ops
    cm = ops.confusion_matrix(logits_or_labels, target, num_classes=11)   # int64 (C, C), rows = GT, cols = pred
    stats = ops.miou(cm)                                                   # iou, miou, acc, macc, class_acc
    probs = ops.tta_merge(views, flips, out_size=(H, W))                   # float32 (B, C, H, W)

    acc = ops.TTAAccumulator(batch, num_classes, (H, W), device)          # streaming: one view alive at a time
    for scale in scales: acc.add(model(resize(img, scale)), flip=False); ...
    labels, maxprob = acc.argmax()

    sa = ops.SlideAccumulator(batch, num_classes, (H, W), crop=512, stride=341, device=dev)   # mmseg mode='slide'

This module is the one import; the code lives by concern: csrc/backend.py (loading the library, the fallback, the
fake kernels), csrc/confusion.py, csrc/tta.py, csrc/slide.py, csrc/quant.py.

Backends. The C++/CUDA library (csrc/*.cpp, csrc/*.cu; built by csrc/build.py on first use, cached per machine)
serves CPU tensors, and CUDA tensors when it was built with CUDA. When it cannot be built or loaded, every op
falls back to its pure-PyTorch reference (`ref_*`) after ONE RuntimeWarning that names the failure;
`ops.backend()` says what is in use. TRASHSEG_OPS=ref forces the references.

Semantics shared by both backends:
- confusion_matrix: pixels whose target equals ignore_index are skipped (whatever the prediction there). Any other
  target outside [0, C) is an error; so is a predicted label outside [0, C) on a counted pixel. Logits are reduced by
  argmax over channels like torch.argmax: ties go to the lowest index, and a NaN counts as the maximum (the first NaN
  wins). On the CPU an error raises ValueError at once. On CUDA the kernel does not sync with the host: it counts
  offending pixels into a per-device error buffer, leaves them out of the matrix, and the ValueError is raised at the
  next `ops.check_errors()` or `ops.miou(cm)` for a CUDA cm (which reads the buffer, and so syncs, once). Call one
  of them before trusting a CUDA matrix; errors from every call on that device since the last check are reported.
- tta_merge / TTAAccumulator: views are upcast to float32, resized like F.interpolate(mode="bilinear",
  align_corners=False, antialias=False) to out_size, softmax over channels, un-flipped (flip=True: the view was
  computed on a horizontally flipped image), and averaged. NaN logits give NaN probabilities at that pixel. A
  dimension whose size is unchanged is copied, not interpolated (F.interpolate computes 1·x + 0·x there, which turns
  a ±inf logit into NaN): a -inf logit (a masked class) gives probability exactly 0, a +inf one a NaN pixel, as
  torch.softmax does; neither reaches the neighbouring pixels. The CPU and CUDA kernels and the references all copy.
- float64 logits are argmaxed in float64 (confusion_matrix).
- torch.compile: every op has a fake kernel and the wrappers do not break the graph (fullgraph=True works).
- Autograd: none of the ops has a backward. tta_merge and TTAAccumulator.add refuse views that require grad (with
  grad mode on) instead of returning outputs that silently lost it; confusion_matrix's output is integer (like
  torch.argmax), so logits that require grad are accepted.
- All index arithmetic is 64-bit; inputs may be non-contiguous (logits for the confusion matrix are made contiguous
  first; TTA views are read through their strides without a copy).
"""
# The private names are for the tests (the fake table, the CUDA error buffers).
from .backend import _FAKES, _NO_VALUE, _err_buffers, backend  # noqa: F401
from .confusion import _error_buffer, check_errors, confusion_matrix, miou, ref_confusion_matrix  # noqa: F401
from .quant import quantize_u8, ref_quantize_u8
from .slide import SlideAccumulator, ref_slide_accumulate_, slide_accumulate_, slide_grid
from .tta import TTAAccumulator, ref_tta_merge, tta_merge

__all__ = [
    "confusion_matrix", "miou", "check_errors", "tta_merge", "TTAAccumulator",
    "ref_confusion_matrix", "ref_tta_merge", "backend",
    "slide_grid", "slide_accumulate_", "SlideAccumulator", "ref_slide_accumulate_",
    "quantize_u8", "ref_quantize_u8",
]
