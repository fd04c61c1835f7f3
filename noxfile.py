"""Developer sessions: ``nox -s tests lint types docs`` (``pip install nox``)."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["tests", "lint", "types"]

# every supported Python present on this machine
PYTHONS = [v for v in ("3.11", "3.12", "3.13") if shutil.which(f"python{v}")]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pyright", "--pythonpath", session.virtualenv.bin + "/python")
    session.run("bash", "tools/verifytypes.sh", env={"PYTHON": session.virtualenv.bin + "/python"})


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs,otel]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
