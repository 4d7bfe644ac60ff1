"""bench/gpu_check.sh's plumbing, on any machine: a GPU session gets one run of it, so a shell error there would
waste the session. Checks the budget skip, step selection, the table, and that what comes back through the device
tool's $OUT stays within its 8 files."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["env", "build_cuda", "test_cuda", "sanitize_memcheck", "sanitize_racecheck", "bench_ops", "bench_infer",
         "test_slide_cuda", "bench_slide", "bench_train", "bench_models", "test_e2e", "bench_train_compile",
         "cpu_bf16_infer"]


def _run(tmp_path, **env):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    e = {**os.environ, "PY": sys.executable, "GPU_CHECK_OUT": str(tmp_path / "logs"), "OUT": str(out), **env}
    r = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=e, capture_output=True, text=True, timeout=120)
    return r, out


def test_budget_spent_skips_every_step_and_still_prints_the_table(tmp_path):
    r, out = _run(tmp_path, GPU_CHECK_BUDGET="0")
    table = r.stdout[r.stdout.index("item "):]
    for name in STEPS:
        assert f"{name} " in table and "SKIPPED" in table.split(f"\n{name} ")[1].split("\n")[0], name
    assert r.returncode == 0  # nothing ran, nothing failed
    files = os.listdir(out)
    assert "summary.tsv" in files and "gpu_check_logs.txt" in files and len(files) <= 8


def test_selected_step_runs_alone_and_its_log_comes_back(tmp_path):
    r, out = _run(tmp_path, GPU_CHECK_STEPS="env")
    rows = [ln.split()[0] for ln in r.stdout[r.stdout.index("item "):].splitlines()[1:] if ln.strip()]
    assert rows[0] == "env" and not set(rows) & (set(STEPS) - {"env"}), rows
    logs = (out / "gpu_check_logs.txt").read_text()
    assert "===== env.log" in logs and "torch" in logs  # the step's own output (its version line or its error)
