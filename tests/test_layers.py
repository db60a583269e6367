"""The layer rule of the README's architecture section, checked on the source (no import is executed).

- `apps/core` imports no domain app; `apps/registry` imports nothing from `apps/catalog`;
- the pure ML code (`apps/inference` outside its Django side, `services.py` and `apps.py`;
  `apps/tuning/trainer`) imports no Django and no other app of the store than `apps.core.errors` (the one error
  hierarchy, itself free of Django);
- no two modules import each other, directly or through others (module-level imports);
- an import inside a function says why (a comment on its line or the line above), since most dodge nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for top in ("apps", "store") for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts)
DOMAIN = ("apps.accounts", "apps.api", "apps.catalog", "apps.chat", "apps.inference", "apps.registry", "apps.tuning")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function?) for every import of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # for annotations only: never executed
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, in_function))
                # `from apps.x import y` may name a module y of package apps.x
                found.extend((f"{child.module}.{alias.name}", child.lineno, in_function) for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return found


MODULES = {module_name(p): p for p in SOURCES}


def project_imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    return {name for name, _, local in imports(path)
            if name in MODULES and not (module_level_only and local)}


def offenders(paths, forbidden) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{line} imports {name}" for p in paths for name, line, _ in imports(p)
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


def under(folder: str, *, but: tuple[str, ...] = ()) -> list[Path]:
    return [p for p in SOURCES if p.relative_to(ROOT).as_posix().startswith(folder) and p.name not in but]


def test_core_imports_no_domain_app():
    assert offenders(under("apps/core/"), DOMAIN) == []


def test_the_registry_imports_nothing_of_the_catalog():
    assert offenders(under("apps/registry/"), ("apps.catalog",)) == []


def test_pure_ml_code_imports_no_django_and_no_store_app():
    # services.py (with the /healthz check) and the app's Django wiring (apps.py) are the Django side.
    pure = under("apps/inference/", but=("services.py", "apps.py")) + under("apps/tuning/trainer/")
    assert pure, "the pure ML modules moved: update this test"
    assert offenders(pure, ("django", "rest_framework", "celery", *DOMAIN[:4], "apps.registry", "apps.tuning.models",
                            "apps.tuning.services", "store")) == []


def test_no_import_cycle_between_modules():
    graph = {name: project_imports(path, module_level_only=True) - {name} for name, path in MODULES.items()}
    cycles, done, stack = [], set(), []

    def walk(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            # a package's __init__ imported for a submodule is not an edge back to the importer
            walk(target)
        stack.pop()
        done.add(node)

    for name in sorted(graph):
        walk(name)
    assert cycles == []


def comment_above(lines: list[str], index: int) -> bool:
    """A comment between the function's `def` and line `index`."""
    for above in reversed(lines[:index]):
        text = above.strip()
        if text.startswith("#"):
            return True
        if text.startswith(("def ", "async def ")):
            return False
    return False


def test_function_local_imports_say_why():
    unexplained = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for name, line, local in imports(path):
            if not local or not name.startswith(("apps.", "store.")):
                continue
            here = lines[line - 1]
            if "#" not in here and not comment_above(lines, line - 1):
                unexplained.append(f"{path.relative_to(ROOT)}:{line} {here.strip()}")
    assert sorted(set(unexplained)) == []
