"""trashseg custom ops: fused confusion matrix / mIoU and TTA merge (C++ CPU + CUDA kernels, PyTorch references).

    from csrc import ops
"""
