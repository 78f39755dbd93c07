"""The layout's rules, read from the source (every import, lazy ones inside functions included):
no import circle, Label Studio reached only through its gateway, Flask only in the HTTP layer, and
the inner packages free of both."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PKG = Path(__file__).resolve().parents[1] / "ml_backend"


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (absolute names)."""
    tree = ast.parse(path.read_text())
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from . import commands` imports the module, not the package
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES or not base.startswith("ml_backend") else base)
    return out


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _internal(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for mod, path in MODULES.items():
        g.add_node(mod)
        for imp in _imports(path):
            target = _internal(imp) if imp.startswith("ml_backend") else None
            if target and target != mod:
                g.add_edge(mod, target)
    return g


def test_the_package_has_no_import_circle_lazy_imports_included():
    g = _graph()
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import circles: {cycles[:5]}"


def _users_of(prefix: str) -> set[str]:
    return {mod for mod, path in MODULES.items() if any(i == prefix or i.startswith(prefix + ".") for i in _imports(path))}


def test_only_the_gateway_imports_the_label_studio_sdk():
    assert {m for m in _users_of("label_studio_sdk") if not m.startswith("ml_backend.labelstudio")} == set()


def test_only_the_gateway_calls_the_sdk_client():
    callers = {mod for mod, path in MODULES.items() if ".client." in path.read_text()
               and not mod.startswith("ml_backend.labelstudio")}
    # the OpenAI provider's own client is the openai SDK's, not Label Studio's
    assert callers <= {"ml_backend.judge.providers.openai_compat"}, callers


def test_only_the_http_layer_imports_flask():
    users = _users_of("flask") | _users_of("werkzeug")
    assert {m for m in users if not m.startswith("ml_backend.http")} == set()


@pytest.mark.parametrize("inner", ["judge", "evaluator", "quality"])
def test_inner_packages_know_nothing_of_flask_label_studio_or_the_app(inner):
    """They may use each other (plain data and functions) and the two leaf helpers, nothing outside."""
    mods = [m for m in MODULES if m == f"ml_backend.{inner}" or m.startswith(f"ml_backend.{inner}.")]
    inner_world = ("judge", "evaluator", "quality", "redact", "warmup")
    for mod in mods:
        for imp in _imports(MODULES[mod]):
            assert not imp.startswith(("flask", "werkzeug", "label_studio_sdk")), (mod, imp)
            if imp.startswith("ml_backend."):
                assert imp.split(".")[1] in inner_world, (mod, imp)


def test_settings_are_read_from_the_environment_only_at_the_entry_points():
    readers = {mod for mod, path in MODULES.items() if "Settings.from_env(" in path.read_text()}
    assert readers <= {"ml_backend.settings", "ml_backend.cli.commands", "ml_backend.cli.main",
                       "ml_backend.http.app", "ml_backend.rq_jobs", "ml_backend.dataframe"}, readers


def test_every_internal_import_names_a_module_that_exists():
    """Lazy imports run only when their path does: a moved module must not leave one dangling."""
    dangling = [(mod, imp) for mod, path in MODULES.items() for imp in _imports(path)
                if imp.startswith("ml_backend") and _internal(imp) not in (imp, imp.rpartition(".")[0])]
    assert not dangling, dangling
