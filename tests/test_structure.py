"""The package's shape: no import cycles, small files, one module raising
input errors. Read from the sources (``ast``), not from imported modules, so
imports inside functions count too."""

from __future__ import annotations

import ast
import pathlib

import numxent

SRC = pathlib.Path(numxent.__file__).parent
MAX_LINES = 600
#: Modules that raise no input error of their own: they call ``_validation``.
#: ``_config`` raises the threading layer's RuntimeError (not an input error).
RAISE_ALLOWED = {
    # the module __getattr__ of lazy names (PEP 562's protocol)
    "numxent": {"AttributeError"},
    "_config": {"RuntimeError", "CompileDeferred"},  # (control flow)
    "_torch_serve": {"_Unserved"},  # control flow: the call goes to PyTorch
    # control flow: ends a line search; a singular triangular system (as
    # scipy.linalg.solve_triangular raises it)
    "_lbfgs": {"_TooManySteps", "LinAlgError"},
}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The numxent modules ``name`` imports, anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            found.update(subs)
            if len(subs) < len(node.names):  # names defined in ``mod`` itself
                found.add(mod)
    return {m for m in found if m in known and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycles():
    mods = _modules()
    known = set(mods)
    graph = {name: _imports(name, path, known) for name, path in mods.items()}
    # a package's __init__ runs before its submodules: a submodule importing
    # a name of its own package is no cycle through the __init__'s imports
    for name in graph:
        graph[name].discard(name.rpartition(".")[0])
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    known = {"numxent", "numxent.torch", "numxent._torch_ops"}
    path = SRC / "_torch_ops.py"
    assert "numxent.torch" not in _imports("numxent._torch_ops", path, known)


def test_no_source_file_over_the_limit():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _raised_names(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            yield getattr(exc, "id", getattr(exc, "attr", None))


def test_input_errors_are_raised_by_validation_only():
    """Every module but ``_validation`` leaves input errors to it (a bare
    ``raise`` re-raising is fine); ``_validation`` raises numxent's own
    classes only."""
    from numxent import errors

    ours = {n for n in errors.__all__}
    assert set(_raised_names(SRC / "_validation.py")) <= ours
    for name, path in _modules().items():
        short = name.removeprefix("numxent.")
        if short in ("_validation", "errors") or short.startswith("bench"):
            continue
        allowed = RAISE_ALLOWED.get(short, set())
        assert set(_raised_names(path)) <= allowed, name
