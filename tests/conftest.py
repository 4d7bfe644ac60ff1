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


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
