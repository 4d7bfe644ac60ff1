import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The suite's CPU precision does not depend on the machine it runs on: --amp auto picks bf16 on a CPU with native
# bf16 (engine.evaluate.cpu_has_native_bf16), which TRASHSEG_CPU_BF16 overrides. Unless the caller sets it
# (TRASHSEG_CPU_BF16=1 make test runs the whole suite as a bf16 CPU would), every test, its subprocesses included,
# sees fp32; the tests that take the `cpu_bf16` fixture run under both values on every machine.
os.environ.setdefault("TRASHSEG_CPU_BF16", "0")
# A native-bf16 CPU is simulated as one with AMX (bf16 inference), whatever this one has; test_amp_cpu sets 0 to
# check inference's choice on avx512_bf16 alone (fp32 with Winograd).
os.environ.setdefault("TRASHSEG_CPU_AMX", "1")

# `make test` runs two pytest workers (pytest-xdist, one per core of a 2-core machine). Each worker, and every
# subprocess it starts that does not set its own, computes on one thread, so the two never fight over the cores
# (an oversubscribed run is slower than one worker alone). A plain `pytest` run keeps torch's default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(params=["0", "1"], ids=["cpu_fp32", "cpu_bf16"])
def cpu_bf16(request, monkeypatch):
    """Runs the test twice: as on a CPU without native bf16 ("0") and as on one with it ("1": avx512_bf16 / AMX;
    emulated and ~100x slower in bf16 matmuls on an AVX2 CPU, so such tests keep their inputs tiny)."""
    monkeypatch.setenv("TRASHSEG_CPU_BF16", request.param)
    return request.param == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "heavy: a minute or more of CPU (real-size parity, compiles, fault injection): "
                            "left out of `make test`, run by `make test-heavy` and CI")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    config.addinivalue_line("markers", "bf16_heavy: the test's cpu_bf16 variant is heavy (its fp32 one stays in "
                            "`make test`)")


@pytest.hookimpl(tryfirst=True)  # before -m "not heavy" deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "bf16_heavy" in item.keywords and getattr(item, "callspec", None) and \
                item.callspec.params.get("cpu_bf16") == "1":
            item.add_marker(pytest.mark.heavy)
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The suite's one way to get demo data: demo_data(train=, val=, test=, extra=, size=, seed=, imbalance=) is the
    path (str) of a data root written by data.demo.make_demo (what `python -m data.demo` writes). Roots are shared by
    every test asking for the same arguments and must be treated as read-only; fresh=True writes a private one for a
    test that edits its files."""
    from data.demo import make_demo
    made: dict[tuple, str] = {}

    def get(train: int = 4, val: int = 2, test: int = 2, extra: int = 0, size: int = 64, seed: int = 3,
            imbalance: bool = False, fresh: bool = False) -> str:
        key = (train, val, test, extra, size, seed, imbalance)
        if fresh or key not in made:
            out = str(tmp_path_factory.mktemp("demo"))
            make_demo(out, train, val, test, extra, size, seed, imbalance)
            if fresh:
                return out
            made[key] = out
        return made[key]

    return get
