"""The package's import graph has no cycles, counting imports inside functions too (a lazy import that closes a
circle still ties the two modules together)."""
import ast
from pathlib import Path

import tcm_kit

PKG = Path(tcm_kit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the tcm_kit modules it imports (anywhere in its source)."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[mod] |= {n for n in names if n in modules and n != mod and n != "tcm_kit"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by depth-first search from each module (each reported once)."""
    found, seen = [], set()

    def visit(start, node, path):
        for nxt in sorted(graph[node]):
            if nxt == start:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    found.append(path + [start])
            elif nxt not in path and nxt > start:
                visit(start, nxt, path + [nxt])

    for m in sorted(graph):
        visit(m, m, [m])
    return found


def test_the_graph_finds_a_cycle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_parser_sees_relative_and_lazy_imports():
    g = import_graph()
    assert "tcm_kit.config" in g["tcm_kit.train"]  # from .config import ... at module level
    assert "tcm_kit.clip" in g["tcm_kit.train"]  # imported inside build_model


def test_tcm_kit_has_no_import_cycles():
    assert cycles(import_graph()) == []
