"""The two README commands are the whole set-up, and CI runs exactly the test one."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick and "make test" in quick
    commands = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
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
