"""The repository's shape (STYLE.md, issue 25): no import circle among the project's modules, function-level imports
included, and no Python file outside tests/ and bench/ over 500 lines."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".venv", ".cache", ".git", "build", "runs", "demo_data", "demo_imbalanced", "site", "work_dirs",
             "__pycache__"}
MAX_LINES = 500
TRAIN_MAX_LINES = 450  # train.py is the loop; the rules it leans on live in engine/


def _files() -> list[str]:
    out = []
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("."))
        out += [os.path.relpath(os.path.join(d, f), ROOT) for f in sorted(files) if f.endswith(".py")]
    return out


def _module(rel: str) -> str:
    parts = rel[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module → the project modules it imports anywhere in its body (module level, in functions, under if)."""
    files = _files()
    modules = {_module(f): f for f in files}
    # tests/ has no __init__.py: pytest puts it on sys.path, so its files import each other by their bare names.
    alias = {m.split(".", 1)[1]: m for m in modules if m.startswith("tests.")}

    def resolve(name: str) -> str | None:
        """The project module an import names (its longest dotted prefix that is one), or None."""
        head, _, rest = name.partition(".")
        if head in alias:
            name = alias[head] + ("." + rest if rest else "")
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, rel in modules.items():
        tree = ast.parse(open(os.path.join(ROOT, rel), encoding="utf-8").read(), rel)
        package = mod if rel.endswith("__init__.py") else mod.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".") if package else []
                    up = up[:len(up) - (node.level - 1)] if node.level > 1 else up
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import sub` imports the submodule pkg.sub when there is one, else names from pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in map(resolve, targets) if t and t != mod}
        graph[mod] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle for each strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_and_relative_imports():
    g = _graph()
    assert "models.registry" in g["models.optim"]          # from .registry import ... (module level)
    assert "csrc.build" in g["csrc.backend"]               # from . import build (inside a function)
    assert "models.convert.hf" in g["models.convert.source"]  # from . import hf (a submodule)
    assert "models" in g["models.convert.target"]          # from .. import misfit_message (the package)
    assert "tests.test_ops" in g["tests.test_ops_compile"]  # from test_ops import isa (tests/ on sys.path)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    cycles = _cycles(_graph())
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _over() -> dict[str, int]:
    out = {}
    for rel in _files():
        if rel.split(os.sep)[0] in ("tests", "bench"):
            continue
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            out[rel.replace(os.sep, "/")] = n
    return out


def test_no_file_over_500_lines():
    over = _over()
    assert not over, f"over {MAX_LINES} lines: {over}; split them along their seams"


def test_train_py_is_the_loop():
    with open(os.path.join(ROOT, "train.py"), encoding="utf-8") as f:
        n = sum(1 for _ in f)
    assert n <= TRAIN_MAX_LINES, f"train.py has {n} lines (at most {TRAIN_MAX_LINES}): move a rule to engine/"
