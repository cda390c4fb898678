"""The architecture rules, checked on the source (AST) and in fresh interpreters:

- import boundaries: the engine (all of sjc_dist but distributed/) never imports ray, mlflow or pandas;
  diffusion/ and scene/ never import each other;
- importing sjc_dist and sjc_dist.cli (and resolving an `sjc run` config) imports no ray/mlflow and leaves CUDA
  uninitialised;
- size budgets: no file over 500 lines, no function over 60 lines (argparse option tables excepted), median
  function length at most 10 lines.
"""
import ast
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import sjc_dist

PACKAGE = Path(sjc_dist.__file__).resolve().parent
HEAVY = {"ray", "mlflow", "pandas"}
MAX_FILE_LINES, MAX_FUNCTION_LINES, MAX_MEDIAN_LINES = 500, 60, 10


def modules() -> dict[str, ast.Module]:
    """Dotted module name -> parsed source, for every .py file of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def imported(name: str, tree: ast.Module) -> set[str]:
    """Absolute names of every module imported anywhere in the module (lazy imports inside functions too)."""
    package = name if tree_is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)  # importlib.import_module("...") with a literal name
    return found


def tree_is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def violations(rule) -> list[str]:
    return [f"{mod} imports {imp}" for mod, tree in modules().items() for imp in sorted(imported(mod, tree))
            if rule(mod, imp)]


def in_layer(module: str, layer: str) -> bool:
    return module == f"sjc_dist.{layer}" or module.startswith(f"sjc_dist.{layer}.")


def test_engine_never_imports_ray_mlflow_or_pandas():
    bad = violations(lambda mod, imp: not in_layer(mod, "distributed") and imp.split(".")[0] in HEAVY)
    assert not bad, bad


@pytest.mark.parametrize("a,b", [("diffusion", "scene"), ("scene", "diffusion")])
def test_diffusion_and_scene_are_independent(a, b):
    bad = violations(lambda mod, imp: in_layer(mod, a) and in_layer(imp, b))
    assert not bad, bad


def test_import_boundary_checker_sees_relative_and_lazy_imports():
    tree = ast.parse("from ..scene.field import X\nimport ray\ndef f():\n    from .. import scene\n")
    assert {"sjc_dist.scene.field", "ray", "sjc_dist", "sjc_dist.scene"} <= imported("sjc_dist.diffusion.cfg", tree)


PROBE = """
import contextlib, io, json, sys

def state(stage):
    torch = sys.modules.get("torch")
    heavy = sorted(m for m in ("ray", "mlflow", "pandas") if m in sys.modules)
    return {"stage": stage, "heavy": heavy, "cuda": bool(torch and torch.cuda.is_initialized())}

seen = []
import sjc_dist
import sjc_dist.cli
seen.append(state("import sjc_dist, sjc_dist.cli"))
from sjc_dist import RunConfig, SJCRun, VPDenoiser, render, run_job, load_model
seen.append(state("public names"))
with contextlib.redirect_stdout(io.StringIO()):
    code = sjc_dist.cli.main(["run", "--config", "empirical", "--prompt", "a red cube", "--dry-run"])
seen.append(state(f"sjc run --dry-run (exit {code})"))
print(json.dumps(seen))
"""


def test_import_is_light():
    """In a fresh interpreter: no ray/mlflow/pandas and no CUDA after importing, and after `sjc run --dry-run`."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["stage"] for s in seen][-1].endswith("(exit 0)")
    bad = [s for s in seen if s["heavy"] or s["cuda"]]
    assert not bad, bad


def function_lengths() -> dict[str, int]:
    """'module:function' -> lines of its body, not counting argparse `add_argument(...)` statements."""
    out = {}
    for mod, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                table = sum(s.end_lineno - s.lineno + 1 for s in ast.walk(node)
                            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                            and getattr(s.value.func, "attr", "") == "add_argument")
                out[f"{mod}:{node.name}"] = node.end_lineno - node.lineno + 1 - table
    return out


def test_no_file_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, long


def test_no_function_over_60_lines():
    long = {name: n for name, n in function_lengths().items() if n > MAX_FUNCTION_LINES}
    assert not long, long


def test_median_function_is_short():
    assert statistics.median(function_lengths().values()) <= MAX_MEDIAN_LINES
