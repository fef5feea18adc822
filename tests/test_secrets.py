"""Nothing secret in the repository, and luigid never listens beyond the loopback by default.

A small secrets scanner (what `detect-secrets` looks for, without its dependency) runs over
every file git tracks or would track: private keys, cloud and service tokens, and passwords
written into connection strings or assignments. Placeholders (``change-me``, ``${VAR}``) pass.
"""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY( BLOCK)?-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{60,}"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Stripe key": re.compile(r"\b[sr]k_live_[0-9A-Za-z]{20,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"]+)@"),
    "password assignment": re.compile(
        r"(?i)(?<![${])\b(?:password|passwd|pgpassword|secret|api_key|apikey|token)\b\s*[:=]\s*['\"]?([^\s'\"#,;)]+)"),
}
# values that are obviously not secrets: placeholders, variables, empty, code
PLACEHOLDER = re.compile(r"(?i)^(?:change-?me|changeme|example|dummy|placeholder|secret|password|x+|\*+|none|null|"
                         r"true|false|<[^>]*>|\$\{?[A-Za-z_][A-Za-z0-9_:?+-]*\}?.*|%\(.*|\{.*\}?|os\.environ.*|"
                         r"env\[.*|self\..*|[a-z_]+\(.*|[a-z_]+(?:\.[a-z_]+)*|\"|')$")


def scan_text(text: str) -> list[tuple[int, str]]:
    """[(line number, kind)] of what looks like a secret in ``text``."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for kind, pat in PATTERNS.items():
            for m in pat.finditer(line):
                value = m.group(1) if pat.groups else m.group(0)
                if value is not None and pat.groups and PLACEHOLDER.match(value.strip()):
                    continue
                found.append((n, kind))
    return found


def repo_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode().split("\0")
    return [REPO / f for f in out if f and (REPO / f).is_file()]


@pytest.mark.parametrize("text,kind", [
    ("-----BEGIN RSA PRIVATE KEY-----", "private key"),
    ("key = AKIAIOSFODNN7EXAMPLE", "AWS access key"),
    ("GH = ghp_" + "a1B2" * 9, "GitHub token"),
    ("url: postgresql://footprints:s3cr3tPa55@db:5432/footprints", "password in a URL"),
    ("PGPASSWORD=hunter2hunter2", "password assignment"),
    ('password = "Tr0ub4dor&3"', "password assignment"),
])
def test_the_scanner_finds_planted_secrets(text, kind):
    assert (1, kind) in scan_text(text)


@pytest.mark.parametrize("text", [
    "PGPASSWORD=change-me", "PGPASSWORD: ${PGPASSWORD:?set PGPASSWORD in .env}",
    "postgresql+psycopg2://${PGUSER}@${PGHOST}:${PGPORT}/${PGDATABASE}", 'if os.environ.get("PGPASSWORD"):',
    'params["password"] = os.environ["PGPASSWORD"]', "| `PGUSER` / `PGPASSWORD` | `footprints` / none |",
    'su_psql -v pw="${PGPASSWORD:-}"',
])
def test_placeholders_are_not_secrets(text):
    assert scan_text(text) == []


def test_nothing_secret_is_in_the_repository():
    hits = []
    for path in repo_files():
        if path.suffix in {".tif", ".png", ".gpkg", ".keras", ".onnx", ".whl", ".gz", ".zip"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{path.relative_to(REPO)}:{n}: {kind}" for n, kind in scan_text(text)
                 if path.name != "test_secrets.py"]
    assert not hits, "possible secrets:\n" + "\n".join(hits)


def test_luigid_listens_on_the_loopback_by_default():
    """Every luigid command line in the docs and scripts binds 127.0.0.1; in compose, luigid
    listens on the compose network only and is published on the host's loopback only."""
    lines = []
    for path in [REPO / "README.md", REPO / "Makefile", REPO / "Dockerfile", *REPO.glob("scripts/*"),
                 *REPO.glob("pipeline/*.py"), REPO / "luigid.cfg"]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"(^|[\s/`])luigid\s+--", line):
                lines.append((path.name, n, line))
    assert lines, "the README shows how to start luigid"
    for name, n, line in lines:
        assert "--address 127.0.0.1" in line, f"{name}:{n}: luigid without --address 127.0.0.1: {line.strip()}"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for svc in compose["services"].values():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
