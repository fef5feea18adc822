"""The two README commands are the whole set-up, and CI runs exactly the test one."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick and "make test" in quick
    commands = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands[-1].strip() == "make test"


def test_required_layout():
    for name in ("setup.py", "README.md", "pipeline", "tasks", "models", "sql", "docker-compose.yml", "tests",
                 "Makefile", "luigi.cfg", "bench", ".ci/run"):
        assert (REPO / name).exists(), name


def test_sql_uses_named_parameters_only():
    for f in (REPO / "sql").glob("*.sql"):
        text = f.read_text()
        assert not re.search(r"(?<!%)%s", text), f"{f.name}: positional %s parameter"
        # identifiers may be composed with psycopg2.sql ({name} -> sql.Identifier); values never
        body = re.sub(r"--.*", "", text)
        assert not re.search(r"\{\d*\}", body), f"{f.name}: positional str.format placeholder"
        assert not re.search(r"'\{\w+\}'", body), f"{f.name}: a value formatted into a string literal"


# ---------------------------------------------------------------- the layers: pipeline -> tasks -> models -> footprints

import ast  # noqa: E402

LAYERS = ("footprints", "models", "tasks", "pipeline")
FORBIDDEN = {
    "footprints": {"luigi", "tasks", "pipeline", "models"},
    "models": {"luigi", "tasks", "pipeline"},
    "tasks": {"pipeline"},
}


def _modules():
    """{dotted module name: path} of every project module in the four layers."""
    out = {}
    for layer in LAYERS:
        for f in sorted((REPO / layer).rglob("*.py")):
            rel = f.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _imports(path: Path, module: str):
    """(imported module, line, at top level?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(id(n) for n in tree.body)
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name, node.lineno, id(node) in top
            for a in node.names:  # `from footprints import geo` imports the module footprints.geo
                yield f"{name}.{a.name}", node.lineno, id(node) in top


def test_layers_import_one_way():
    bad = []
    for module, path in _modules().items():
        layer = module.split(".")[0]
        for name, line, _ in _imports(path, module):
            if name.split(".")[0] in FORBIDDEN.get(layer, ()):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not bad, "imports against the arrows pipeline -> tasks -> models -> footprints:\n" + "\n".join(bad)


def test_no_import_cycles():
    mods = _modules()
    graph = {m: sorted({n for n, _, _ in _imports(p, m) if n in mods and n != m}) for m, p in mods.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    # a package's __init__ importing its own submodules is not a cycle of concern
    cycles = [c for c in cycles if not all(x.startswith(c.split(" -> ")[0] + ".") or x == c.split(" -> ")[0]
                                           for x in c.split(" -> "))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_deferred_imports_are_explained():
    """Imports sit at the top of modules; a deferred one (a heavy optional import) says why."""
    bad = []
    for module, path in _modules().items():
        lines = path.read_text().splitlines()
        for name, line, top in _imports(path, module):
            if top or name.split(".")[0] == "__future__":
                continue
            text = lines[line - 1]
            if "#" not in text and "# " not in (lines[line - 2] if line >= 2 else ""):
                bad.append(f"{path.relative_to(REPO)}:{line}: {text.strip()}")
    assert not bad, "imports inside functions without a comment saying why:\n" + "\n".join(sorted(set(bad)))


def test_module_sizes():
    big = []
    for module, path in _modules().items():
        n = len(path.read_text().splitlines())
        limit = 250 if module.startswith("tasks") else 500 if module.split(".")[0] in ("footprints", "models") else None
        if limit and n > limit:
            big.append(f"{path.relative_to(REPO)}: {n} lines (limit {limit})")
    assert not big, "\n".join(big)


def test_no_luigi_in_the_library():
    for f in (REPO / "footprints").rglob("*.py"):
        assert not re.search(r"^\s*(import luigi|from luigi)", f.read_text(), re.M), f


def test_sql_ships_in_the_package():
    from footprints import db

    assert (db.sql_dir() / "schema.sql").is_file()
    assert db.load_sql("schema").strip()


def test_luigi_cfg_lists_every_option():
    """luigi.cfg documents every section and option of tasks/config.py (robosat-style)."""
    import luigi

    from tasks import config

    text = (REPO / "luigi.cfg").read_text()
    missing = []
    for name, cls in vars(config).items():
        if isinstance(cls, type) and issubclass(cls, luigi.Config) and cls.__module__ == config.__name__:
            m = re.search(rf"^\[{name}\]$", text, re.M)
            if not m:
                missing.append(f"[{name}]")
                continue
            body = text[m.end():].split("\n[", 1)[0]
            for opt, _ in cls.get_params():
                if not re.search(rf"^(# )?{opt} =", body, re.M):
                    missing.append(f"[{name}] {opt}")
    assert not missing, "luigi.cfg lacks: " + ", ".join(missing)
