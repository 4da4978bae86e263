"""The front door agrees with the package.

README.md, CONTRIBUTING.md, benchmarks/README.md and docs/*.md are read as
text and checked against what they describe: pyproject.toml (extras, pins,
floors, Python), the argument parsers of ``numxent-bench`` and
``python benchmarks/report.py`` (every command shown is parsed, not run),
.ci/run (the README's set-up commands), the modules under src/numxent and
benchmarks/scenarios, the public names of the API page, and the benchmark
tables, which must be what ``python benchmarks/report.py --write-docs``
writes from benchmarks/results/results.json. CHANGELOG.md is history and is
not checked.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/ is not a package

import doc_tables  # noqa: E402
import report  # noqa: E402

from numxent.bench._cli import build_parser as bench_parser  # noqa: E402
from numxent.bench._cli import load_results  # noqa: E402

SRC = ROOT / "src" / "numxent"
FRONT = ["README.md", "CONTRIBUTING.md", "benchmarks/README.md"] + sorted(
    f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")
)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


def text(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def fenced(md: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return re.findall(r"^```(\w*)[^\n]*\n(.*?)^```", md, re.M | re.S)


def inline(md: str) -> list[str]:
    """Every inline code span (outside fenced blocks), newlines as spaces."""
    md = re.sub(r"^```.*?^```", "", md, flags=re.M | re.S)
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", md)]


def requirement(spec: str) -> tuple[str, str]:
    """``"scikit-learn>=1.7"`` -> ``("scikit-learn", ">=1.7")`` (extras and
    markers dropped)."""
    spec = spec.split(";")[0].strip()
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[\w,]+\])?\s*(.*)", spec)
    assert m, spec
    return m[1].lower().replace("_", "-"), m[3].replace(" ", "")


def all_requirements() -> dict[str, set[str]]:
    """Every distribution pyproject names -> the specifiers it gives it."""
    out: dict[str, set[str]] = {}
    for spec in PYPROJECT["project"]["dependencies"] + sum(EXTRAS.values(), []):
        name, version = requirement(spec)
        out.setdefault(name, set()).add(version)
    return out


# -- extras, pins and floors -------------------------------------------------


def test_extras_named_in_the_docs_exist():
    named = set()
    for path in FRONT:
        md = text(path)
        for group in re.findall(r"(?:numxent|\.)\[([\w,-]+)\]", md):
            named.update(group.split(","))
        for one, two in re.findall(r"the `([\w-]+)`(?: and `([\w-]+)`)? extras?\b", md):
            named.update(n for n in (one, two) if n)
    assert {"dev", "torch", "sklearn", "dask", "bench"} <= named  # found at all
    assert named <= set(EXTRAS), named - set(EXTRAS)


def test_the_extras_table_is_pyprojects():
    md = text("docs/getting-started.md")
    rows = re.findall(r"^\| `([\w-]+)` \| (.*?) \|", md, re.M)
    assert sorted(name for name, _ in rows) == sorted(EXTRAS)
    for name, cell in rows:
        shown = {requirement(s) for s in re.findall(r"`([^`]+)`", cell)}
        declared = {requirement(s) for s in EXTRAS[name]}
        if name == "dev":  # a summary: what it names must be what it installs
            assert shown <= declared, (name, shown - declared)
        else:
            assert shown == declared, (name, shown ^ declared)


def test_pins_and_floors_in_the_docs_are_pyprojects():
    declared = all_requirements()
    python = PYPROJECT["project"]["requires-python"]
    assert python == f">={PYPROJECT['tool']['mypy']['python_version']}"
    names = {"NumPy": "numpy", "Numba": "numba", "`tbb` wheel": "tbb",
             "SciPy": "scipy", "scikit-learn": "scikit-learn",
             "PyTorch": "torch"}  # fmt: skip
    checked = 0
    for path in FRONT:
        md = text(path)
        for version in re.findall(r"Python ≥ ?(\d[\d.]*\d)", md):
            assert f">={version}" == python, (path, version)
            checked += 1
        for span in inline(md):
            m = re.fullmatch(r"([A-Za-z][\w.-]*(?:\[\w+\])?)(==|>=)([\d.]+)", span)
            if m:
                name, version = requirement(span)
                assert version in declared.get(name, set()), (path, span)
                checked += 1
        for label, version in re.findall(r"(\S+(?: wheel)?) \(≥ ([\d.]+)\)", md):
            if label in names:
                assert f">={version}" in declared[names[label]], (path, label)
                checked += 1
        for version in re.findall(r"PyTorch (\d+\.\d+\.\d+)", md):
            assert f"=={version}" in declared["torch"], (path, version)
            checked += 1
    assert checked >= 10


def test_dev_installs_the_extras_floors():
    """``dev`` is every extra plus the tools: the same floors, and its pinned
    torch above the torch extra's floor."""
    dev = dict(requirement(s) for s in EXTRAS["dev"])
    for extra in ("torch", "sklearn", "bench", "dask", "docs"):
        for name, version in map(requirement, EXTRAS[extra]):
            if name == "torch":
                floor = tuple(map(int, version.removeprefix(">=").split(".")))
                pin = tuple(map(int, dev["torch"].removeprefix("==").split(".")))
                assert pin >= floor, (dev["torch"], version)
            else:
                assert dev.get(name) == version, (extra, name, dev.get(name), version)


# -- commands ----------------------------------------------------------------

PARSERS = {
    "numxent-bench": bench_parser,
    "python -m numxent.bench": bench_parser,
    "python benchmarks/report.py": report.build_parser,
}


def commands() -> list[tuple[str, str]]:
    """``(file, command)`` of every command line shown: the lines of shell
    code blocks and inline code spans that start with ``python``,
    ``numxent-bench`` or ``pytest`` (comments and optional brackets
    removed, continuation lines joined)."""
    found = []
    for path in FRONT:
        md = text(path)
        lines = []
        for lang, body in fenced(md):
            if lang in ("bash", "sh", "console", ""):
                lines += body.replace("\\\n", " ").splitlines()
        lines += inline(md)
        for line in lines:
            line = re.sub(r"\s#\s.*$", "", line).strip()
            line = re.sub(r"^[A-Z_]+=\S+\s+", "", line)  # environment variables
            if re.match(r"(python|numxent-bench|pytest)(\s|$)", line):
                found.append((path, line.replace("[", "").replace("]", "")))
    return found


COMMANDS = commands()


def nx_options() -> set[str]:
    """The ``--nx-*`` options of the pytest-benchmark suite (benchmarks/conftest.py)."""
    spec = importlib.util.spec_from_file_location(
        "benchmarks_conftest", ROOT / "benchmarks" / "conftest.py"
    )
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    names: set[str] = set()

    class Group:
        def addoption(self, name, **kwargs):
            names.add(name)

    class Parser:
        def getgroup(self, *args):
            return Group()

    conftest.pytest_addoption(Parser())
    return names


def test_commands_are_found():
    progs = {c.split()[0] for _, c in COMMANDS}
    assert {"numxent-bench", "python", "pytest"} <= progs
    assert sum("benchmarks/report.py" in c for _, c in COMMANDS) >= 10


@pytest.mark.parametrize(("path", "command"), COMMANDS)
def test_documented_command_is_accepted(path, command):
    argv = shlex.split(command)
    # placeholders such as N or RESULTS_JSON stand for a value
    argv = ["1" if re.fullmatch(r"[A-Z][A-Z_]*", a) else a for a in argv]
    for prog, parser in PARSERS.items():
        n = len(prog.split())
        if argv[:n] == prog.split() and (len(argv) == n or argv[n].startswith("-")):
            error = doc_tables.parse_error(parser(), argv[n:])
            assert error is None, f"{path}: `{command}`: {error}"
            return
    if argv[0] == "pytest" or argv[:3] == ["python", "-m", "pytest"]:
        for option in (a.split("=")[0] for a in argv if a.startswith("--nx-")):
            assert option in nx_options(), (path, command, option)
    elif argv[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(argv[2]) is not None, (path, command)
    elif argv[0] == "python" and argv[1].endswith(".py"):
        assert (ROOT / argv[1]).is_file(), (path, command)


def test_readme_set_up_is_what_ci_runs():
    readme = text("README.md")
    section = readme.split("## Set up and test", 1)[1]
    lang, body = fenced(section)[0]
    assert lang == "bash"
    shown = [ln.strip() for ln in body.splitlines() if ln.strip()]
    ci = text(".ci/run").splitlines()
    steps = {}
    for i, line in enumerate(ci):
        m = re.match(r"""step ['"](\w+):""", line.strip())
        if m:
            steps[m[1]] = next(x.strip() for x in ci[i + 1 :] if x.strip())
    # (CI adds only a report of the slowest tests to the README's command)
    ci_test = re.sub(r"\s+--durations=\d+$", "", steps["test"])
    assert shown == [steps["install"], ci_test]
    assert shown == ['pip install -e ".[dev]"', "pytest"]


def test_the_parallel_default_run_is_pyprojects_selection():
    """The root conftest spreads ``pytest`` over workers only for the default
    marker selection, which it names again: the two must agree."""
    addopts = PYPROJECT["tool"]["pytest"]["ini_options"]["addopts"]
    (selection,) = re.findall(r"-m '([^']+)'", addopts)
    conftest = text("conftest.py")
    assert f'_DEFAULT_MARKERS = "{selection}"' in conftest
    assert "pytest-xdist" in " ".join(EXTRAS["dev"])


# -- layout and API ----------------------------------------------------------


def test_contributing_layout_is_the_tree():
    md = text("CONTRIBUTING.md")
    (block,) = [b for lang, b in fenced(md) if lang == "text" and "src/numxent/" in b]
    src = block.split("src/numxent/", 1)[1].split("\ntests/", 1)[0]
    listed = set(re.findall(r"^\s+(\w+\.py)\b", src, re.M))
    tree = {p.name for p in SRC.glob("*.py")} | {
        p.name for p in (SRC / "_kernels").glob("*.py")
    }
    assert listed == tree, {"not in the tree": listed - tree, "missing": tree - listed}
    scenarios = block.split("scenarios/", 1)[1].split("conftest.py", 1)[0]
    for path in (ROOT / "benchmarks" / "scenarios").glob("*.py"):
        if path.stem != "__init__":
            assert path.name in scenarios or path.stem in scenarios, path.name


def test_index_names_every_public_module():
    md = text("docs/index.md")
    public = {p.stem for p in SRC.glob("*.py") if not p.stem.startswith("_")}
    public |= {p.name for p in SRC.iterdir() if p.is_dir() and p.name[0] != "_"}
    public.discard("py")
    for name in public:
        assert f"`numxent.{name}`" in md, name
    for name in re.findall(r"^\| `numxent\.(\w+)` \|", md, re.M):
        assert name in public, name


def dunder_all(module: str) -> list[str]:
    """A numxent module's ``__all__``, read from its source."""
    rel = module.split(".")[1:]
    path = SRC.joinpath(*rel).with_suffix(".py") if rel else SRC / "__init__.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{module} has no __all__")


def test_api_page_documents_the_public_api():
    api = text("docs/api.md")
    documented = re.findall(r"^::: (numxent(?:\.\w+)*)\.(\w+)$", api, re.M)
    for module, name in documented:
        assert not name.startswith("_") and name in dunder_all(module), (module, name)
    seen = {f"{m}.{n}" for m, n in documented}
    errors = set(dunder_all("numxent.errors"))
    for module in ("numxent", "numxent.errors", "numxent.torch", "numxent.dask",
                   "numxent.sklearn"):  # fmt: skip
        for name in dunder_all(module):
            if name.isupper() or name.startswith("_"):  # constants, __version__
                continue
            reexported = module == "numxent" and name in errors
            home = "numxent.errors" if reexported else module
            assert f"{home}.{name}" in seen, f"docs/api.md lacks {module}.{name}"


# -- the generated tables ----------------------------------------------------


def normalised(md: str) -> list[str]:
    """Lines with a table's padding and dash counts dropped (tabulate aligns
    columns, the plain writer does not: the cells are what counts)."""
    out = []
    for line in md.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = [c.strip() for c in line.strip()[1:-1].split("|")]
            if all(c and set(c) <= set(":-") for c in cells):
                cells = ["l" if c.startswith(":") else "r" for c in cells]
            line = "|".join(cells)
        out.append(line.rstrip())
    return out


RESULTS = load_results(str(ROOT / doc_tables.RESULTS))


def test_every_block_is_where_it_belongs():
    where = {p: doc_tables.blocks(text(p)) for p in doc_tables.FILES}
    assert where["README.md"] == ["ce-float32"]
    assert where["benchmarks/README.md"] == ["ratio-tables", "training", "sklearn-fit"]
    assert "startup" in where["docs/getting-started.md"]
    assert {b for bs in where.values() for b in bs} == set(doc_tables.BLOCKS)


@pytest.mark.parametrize("path", doc_tables.FILES)
def test_generated_tables_are_what_the_writer_writes(path):
    md = text(path)
    assert normalised(doc_tables.render(md, RESULTS)) == normalised(md), (
        f"{path}: the tables between the numxent-bench markers are not what "
        "`python benchmarks/report.py --write-docs` writes from "
        f"{doc_tables.RESULTS}: run it"
    )


def test_a_hand_edited_figure_is_caught():
    md = text("README.md")
    block = md.split("numxent-bench:ce-float32 begin", 1)[1]
    cell = re.search(r"\d+\.\d+×", block)[0]
    edited = md.replace(cell, "0.99×", 1)
    assert normalised(doc_tables.render(edited, RESULTS)) != normalised(edited)
    assert doc_tables.render(edited, RESULTS) == doc_tables.render(md, RESULTS)


def test_the_readme_table_has_at_most_six_columns():
    tables = [ln for ln in text("README.md").splitlines() if ln.startswith("|")]
    assert tables
    assert max(len(ln.strip().strip("|").split("|")) for ln in tables) <= 6


def test_machine_lines_name_a_command_that_runs_today():
    command, changed = doc_tables.report_command(RESULTS["machine"]["command"])
    assert changed  # the committed run predates the move of the sections
    argv = shlex.split(command)
    assert argv[:2] == ["python", "benchmarks/report.py"]
    assert doc_tables.parse_error(report.build_parser(), argv[2:]) is None
    assert doc_tables.parse_error(bench_parser(), argv[2:]) is not None
