"""Build (once per machine) and load the trashseg op library: C++ CPU kernels, plus CUDA kernels where CUDA runs.

    python -m csrc.build                            # build if needed and load (CUDA too when a GPU is visible)
    python -m csrc.build --cuda                     # insist on the CUDA kernels (fails without a GPU build)
    python -m csrc.build --force-cuda-compile-only  # nvcc the .cu sources for sm_90 to an object file, no GPU needed
    make ext                                        # the first line, from the Makefile

The build goes through torch.utils.cpp_extension.load (ninja) into
$TORCH_EXTENSIONS_DIR/trashseg_ops_{cpu,cuda}_<torch>_<cuda>_<python> (TORCH_EXTENSIONS_DIR defaults to
<repo>/.cache/torch_extensions). A stamp file there records a hash of the sources and flags: when it matches, a
later import loads the library directly, without ninja or a compiler. Several processes starting at once (torchrun
ranks) serialise on an fcntl lock next to the build folder; the kernel drops that lock if its holder dies, so a
killed build never leaves the others waiting, and whoever gets the lock next rebuilds.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import time

import torch

CSRC = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(CSRC)
CPU_SOURCES = ["trashseg_ops.cpp", "cpu_base.cpp", "cpu_avx2.cpp", "slide.cpp", "quant.cpp"]
CUDA_SOURCES = ["cuda_kernels.cu", "slide_cuda.cu"]
HEADERS = ["common.h", "checks.h", "cpu_kernels.h", "cpu_impl.inc", "slide.h", "slide_checks.h"]
CFLAGS = ["-O3", "-fopenmp", "-fno-trapping-math", "-DNDEBUG"]
LDFLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-DNDEBUG"]  # torch adds its own -std (c++20 since torch 2.10)
COMPILE_ONLY_ARCH = ["-gencode=arch=compute_90,code=sm_90"]


_loaded: dict = {}  # this process's loaded library (name, build_dir, cuda)


def extensions_dir() -> str:
    return os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(ROOT, ".cache", "torch_extensions")


def _tag() -> str:
    cuda = (torch.version.cuda or "none").replace(".", "")
    return f"torch{torch.__version__.split('+')[0]}_cu{cuda}_py{sys.version_info[0]}{sys.version_info[1]}"


def cuda_arch_key() -> str:
    """The GPU architectures a CUDA build must serve: the visible devices' compute capabilities (and the
    TORCH_CUDA_ARCH_LIST it was compiled for). Part of the cache key: a build made on one GPU model and reused on
    another would fail at its first launch ("no kernel image is available")."""
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    key = "-".join(f"sm{a}{b}" for a, b in caps) or "sm-none"
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if arch:
        key += "_arch" + "".join(c if c.isalnum() else "." for c in arch)
    return key


def smoke_cuda() -> None:
    """One tiny launch of each CUDA kernel family, synchronised: a stale or foreign build fails here (then backend.py
    falls back to the references for CUDA tensors with its one warning) instead of at the first real call."""
    x = torch.zeros(1, 2, 1, 1, device="cuda")
    t = torch.zeros(1, 1, 1, dtype=torch.uint8, device="cuda")
    err = torch.tensor([0, -(2 ** 63), 0, -(2 ** 63)], dtype=torch.int64, device="cuda")
    torch.ops.trashseg.channel_argmax(x, 1.0, False)
    torch.ops.trashseg.confusion_matrix(x, t, 2, 255, err)
    torch.ops.trashseg.tta_accumulate_(torch.empty_like(x), [x], [0], False, 1.0)
    torch.cuda.synchronize()


def want_cuda() -> bool:
    return torch.cuda.is_available() and torch.version.cuda is not None


def cuda_home() -> str | None:
    """The CUDA toolkit folder: $CUDA_HOME/$CUDA_PATH, else the folder of the real nvcc, else /usr/local/cuda.

    torch's own guess takes dirname(dirname(which nvcc)), which is wrong when nvcc on PATH is a wrapper script
    (as on the dev machines: /usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc)."""
    env = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [env] if env else []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for c in candidates:
        if c and os.path.exists(os.path.join(c, "bin", "nvcc")) and \
                os.path.exists(os.path.join(c, "include", "cuda_runtime.h")):
            return c
    return None


def _cpp_extension():
    # Importing it on a machine without a GPU logs "No CUDA runtime is found" once; that is expected here.
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def _hash_files(names: list[str], extra: object) -> str:
    h = hashlib.sha256()
    for n in sorted(names):
        h.update(n.encode())
        with open(os.path.join(CSRC, n), "rb") as f:
            h.update(f.read())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def load(cuda: bool | None = None, verbose: bool = False) -> dict:
    """Build if needed, then load the library into torch.ops.trashseg. Returns a small info dict.

    cuda=None: CUDA kernels iff a GPU is visible. Raises on any build or load failure (backend.py turns that into
    one warning and the pure-PyTorch references)."""
    if cuda is None:
        cuda = want_cuda()
    name = "trashseg_ops_cuda" if cuda else "trashseg_ops_cpu"
    if _loaded:
        # A second library defining the same TORCH_LIBRARY would abort the process: never load two.
        if _loaded["name"] != name:
            raise RuntimeError(f"{_loaded['name']} is already loaded in this process; cannot also load {name}")
        return dict(_loaded, built=False, seconds=0.0)
    arch_key = cuda_arch_key() if cuda else None
    build_dir = os.path.join(extensions_dir(), f"{name}_{_tag()}" + (f"_{arch_key}" if cuda else ""))
    so_path = os.path.join(build_dir, f"{name}.so")
    stamp_path = os.path.join(build_dir, "trashseg.stamp")
    home = cuda_home() if cuda else None
    sources = CPU_SOURCES + (CUDA_SOURCES if cuda else [])
    digest = _hash_files(sources + HEADERS, {"cflags": CFLAGS, "ldflags": LDFLAGS, "nvcc": NVCC_FLAGS,
                                              "cuda_home": home, "torch": torch.__version__,
                                              "arch": os.environ.get("TORCH_CUDA_ARCH_LIST"),
                                              "devices": arch_key})
    info = {"name": name, "build_dir": build_dir, "cuda": cuda, "built": False, "seconds": 0.0}
    if _read(stamp_path) == digest and os.path.exists(so_path):
        torch.ops.load_library(so_path)
        _loaded.update(info)
        return info
    if cuda and home is None:
        raise RuntimeError("CUDA kernels requested but no CUDA toolkit (nvcc + include/cuda_runtime.h) was found; "
                           "set CUDA_HOME")
    os.makedirs(build_dir, exist_ok=True)
    with _locked(build_dir + ".lock"):
        if _read(stamp_path) == digest and os.path.exists(so_path):  # another process built it meanwhile
            torch.ops.load_library(so_path)
            _loaded.update(info)
            return info
        cpp_extension = _cpp_extension()
        if not hasattr(cpp_extension, "FileLock"):
            # Older torch (FileBaton) waits while build_dir/lock exists; under our lock nobody else is building,
            # so a leftover one is stale (a killed build) and would block us forever.
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(build_dir, "lock"))
        if cuda:
            cpp_extension.CUDA_HOME = home
        t0 = time.time()
        cpp_extension.load(
            name=name,
            sources=[os.path.join(CSRC, s) for s in sources],
            extra_cflags=list(CFLAGS),  # copies: cpp_extension appends to the lists it is given
            extra_cuda_cflags=list(NVCC_FLAGS),
            extra_ldflags=list(LDFLAGS),
            extra_include_paths=[CSRC],
            build_directory=build_dir,
            with_cuda=cuda,
            is_python_module=False,
            verbose=verbose,
        )
        info.update(built=True, seconds=time.time() - t0)
        _loaded.update(info)
        _write_atomic(stamp_path, digest)
    return info


def compile_cuda_only(verbose: bool = False, force: bool = False) -> dict:
    """Compile the .cu sources for sm_90 with nvcc into objects (no link, no GPU). Cached: reruns with unchanged
    sources, flags and nvcc return at once. Raises RuntimeError with nvcc's output on a compile error."""
    home = cuda_home()
    if home is None:
        raise FileNotFoundError("no CUDA toolkit found (nvcc + include/cuda_runtime.h); set CUDA_HOME")
    nvcc = os.path.join(home, "bin", "nvcc")
    cpp_extension = _cpp_extension()
    try:
        torch_includes = cpp_extension.include_paths(device_type="cpu")
    except TypeError:  # older signature
        torch_includes = cpp_extension.include_paths(cuda=False)
    out_dir = os.path.join(extensions_dir(), f"trashseg_cuda_compile_only_{_tag()}")
    os.makedirs(out_dir, exist_ok=True)
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
    info = {"out_dir": out_dir, "objects": [], "seconds": 0.0, "cached": True, "nvcc": version.strip().splitlines()[-1]}
    t0 = time.time()
    for src in CUDA_SOURCES:
        obj = os.path.join(out_dir, src.replace(".cu", ".o"))
        cmd = [nvcc, "-c", os.path.join(CSRC, src), "-o", obj, *COMPILE_ONLY_ARCH, *NVCC_FLAGS, "-std=c++20",
               *cpp_extension.COMMON_NVCC_FLAGS, "--compiler-options", "-fPIC", "--resource-usage",
               "-DTORCH_EXTENSION_NAME=trashseg_ops_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H",
               f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{CSRC}",
               *[a for inc in [*torch_includes, os.path.join(home, "include"), sysconfig.get_paths()["include"]]
                 for a in ("-isystem", inc)]]
        digest = _hash_files([src] + HEADERS, {"cmd": cmd, "nvcc": version, "torch": torch.__version__})
        stamp = obj + ".stamp"
        if not force and _read(stamp) == digest and os.path.exists(obj):
            info["objects"].append(obj)
            continue
        with _locked(obj + ".lock"):
            if verbose:
                print(" ".join(cmd), flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            with open(obj + ".log", "w") as f:
                f.write(r.stdout + r.stderr)
            if r.returncode != 0:
                raise RuntimeError(f"nvcc failed on {src} (exit {r.returncode}):\n{r.stdout}{r.stderr}")
            _write_atomic(stamp, digest)
        info["cached"] = False
        info["objects"].append(obj)
    info["seconds"] = time.time() - t0
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cuda", action="store_true", help="build and load the CUDA kernels (needs a GPU)")
    g.add_argument("--cpu", action="store_true", help="build and load the CPU-only library even with a GPU")
    g.add_argument("--force-cuda-compile-only", action="store_true",
                   help="compile the CUDA sources for sm_90 without linking or running them")
    p.add_argument("--force", action="store_true", help="with --force-cuda-compile-only: ignore the cache")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.force_cuda_compile_only:
        info = compile_cuda_only(verbose=args.verbose, force=args.force)
        state = "cached" if info["cached"] else f"compiled in {info['seconds']:.1f} s"
        print(f"trashseg CUDA compile-only check ({info['nvcc']}): {state} -> {info['out_dir']}")
        return 0
    if args.cuda and not want_cuda():
        print("--cuda: torch sees no CUDA device", file=sys.stderr)
        return 1
    info = load(cuda=True if args.cuda else (False if args.cpu else None), verbose=args.verbose)
    state = f"built in {info['seconds']:.1f} s" if info["built"] else "up to date"
    print(f"trashseg ops ({'CPU+CUDA' if info['cuda'] else 'CPU'}): {state} -> {info['build_dir']}; "
          f"CPU kernels: {torch.ops.trashseg.cpu_isa('')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
