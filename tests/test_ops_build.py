"""Build machinery of csrc/: the CUDA sources compile (no GPU needed), the build lock excludes, the cache is reused.

test_cuda_sources_compile runs nvcc for sm_90 on every machine that has a CUDA toolkit, GPU or not, so a CUDA
compile error cannot land unseen. It caches its object file under $TORCH_EXTENSIONS_DIR (default
<repo>/.cache/torch_extensions): the first run takes about a minute, reruns with unchanged sources are instant."""
import os
import subprocess
import sys
import time

import pytest

from csrc import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.heavy
def test_cuda_sources_compile():
    if build.cuda_home() is None:
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    info = build.compile_cuda_only()
    for obj in info["objects"]:
        assert os.path.getsize(obj) > 0
    log = open(info["objects"][0] + ".log").read()
    # ptxas's resource report is kept next to the object; a kernel that needs a stack frame on the hot paths
    # (confusion from float/half logits, TTA) would mean an array fell into local memory.
    hot = [b for b in log.split("Compiling entry function")[1:]
           if "tta_kernel" in b or ("confusion_kernel" in b and "Lb1ELb1E" in b)]
    assert hot, "no resource report found"
    for block in hot:
        assert " 0 bytes stack frame" in block, block[:400]


def test_build_lock_excludes(tmp_path):
    lock = str(tmp_path / "x.lock")
    out = str(tmp_path / "log")
    code = (f"import time; from csrc import build\n"
            f"with build._locked({lock!r}):\n"
            f"    open({out!r}, 'a').write(f'{{time.time()}} in\\n'); time.sleep(0.6)\n"
            f"    open({out!r}, 'a').write(f'{{time.time()}} out\\n')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    events = [line.split()[1] for line in sorted(open(out).read().splitlines(), key=lambda s: float(s.split()[0]))]
    assert events == ["in", "out"] * 3  # never two holders at once


def test_cached_library_loads_without_compiling():
    from csrc import ops
    if ops.backend()["cpu"] != "ext":
        pytest.skip("extension not built here")
    t = time.time()
    info = build.load()
    assert not info["built"] and time.time() - t < 5
