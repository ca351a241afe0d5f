"""The house rules as tests: layers and import cycles, file and function sizes, the public API.

The layers are import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``):

    world / models  →  rewards  →  envs  →  agents  →  CLI (diffenvs.cli, diffenvs.demo),
                                                        benchmarks, examples

A module may import from its own layer and the layers to its left, never to its right, and
``diffenvs`` reaches ``agents`` only through the CLI's discovery. Import cycles between modules are
checked here with grimp, with no exceptions.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ("diffenvs", "agents", "benchmarks", "examples")
SIZED_FOLDERS = ("diffenvs", "agents", "examples", "benchmarks", "tests")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 120


def _python_files(folders=SIZED_FOLDERS):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_import_linter_contracts_are_kept():
    exe = BIN / "lint-imports"
    if not exe.exists():
        pytest.fail(
            "import-linter is not installed; install the dev extras: pip install -e '.[dev]'"
        )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [str(exe), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _strongly_connected_components(graph) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph is deep enough to hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycles_between_modules():
    """Every import statement counts, also the ones inside functions: a lazy import only hides a
    cycle from the interpreter, not from a reader."""
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))  # benchmarks/ and examples/ are plain folders of scripts
    try:
        graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    cycles = []
    for component in _strongly_connected_components(graph):
        first, second = (
            component[0],
            next(
                m for m in component if m in graph.find_modules_directly_imported_by(component[0])
            ),
        )
        back = graph.find_shortest_chain(importer=second, imported=first) or ()
        cycles.append(" -> ".join([first, *back]))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_file_is_over_500_lines():
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in _python_files()
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not too_long, f"files over {MAX_FILE_LINES} lines (split them): {too_long}"


def test_no_function_is_over_120_lines_unless_a_documented_training_loop():
    """A CleanRL-style training loop may read top to bottom in one function; its docstring says
    so ("... training loop ...")."""
    too_long = {}
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = node.end_lineno - node.lineno + 1
            doc = (ast.get_docstring(node) or "").lower()
            if n > MAX_FUNCTION_LINES and "training loop" not in doc:
                too_long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_import_diffenvs_is_light_and_exposes_the_public_api():
    code = (
        "import sys, diffenvs\n"
        "assert 'torch' not in sys.modules, 'import diffenvs must not import torch'\n"
        "import diffenvs.envs\n"
        "assert 'torch' not in sys.modules, 'import diffenvs.envs must not import torch'\n"
        "print(diffenvs.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr

    from importlib.metadata import version

    import diffenvs
    import diffenvs.envs

    assert diffenvs.__version__ == version("diffenvs") == result.stdout.strip()
    for name in ("make_reward", "Reward", "load_pipeline", "load_clip", "load_oracle"):
        assert name in diffenvs.__all__ and callable(getattr(diffenvs, name))
    from diffenvs.rewards import Reward, make_reward

    assert diffenvs.make_reward is make_reward and diffenvs.Reward is Reward
    for name in ("DiffusionDenoiseEnv", "PromptAppendEnv", "GrammarGridEnv"):
        cls = getattr(diffenvs.envs, name)
        assert cls.__module__.startswith("diffenvs.envs.") and name in diffenvs.envs.__all__
    with pytest.raises(AttributeError):
        _ = diffenvs.no_such_name


def test_public_function_names_are_unique_within_diffenvs():
    """Two public top-level functions with one name in different modules usually do different
    things (the reason for ``load_reward_network`` vs ``load_reward_model``)."""
    seen: dict[str, list[str]] = {}
    for path in _python_files(("diffenvs",)):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module.startswith("diffenvs.world.training."):
            continue  # standalone `python -m` training scripts, not a library API
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                seen.setdefault(node.name, []).append(module)
    # `main` is every `python -m` script's entry point. `dense_ranks` is one function in two
    # places (the labelling app's and the preference data's, which adds a tie margin); the label
    # app may not import the preference package, which builds on it.
    allowed = {"main", "dense_ranks"}
    dups = {k: v for k, v in seen.items() if len(v) > 1 and k not in allowed}
    assert not dups, f"public functions sharing a name: {dups}"
