"""Developer sessions: ``nox -s tests lint types docs coverage`` (``pip install nox``)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

nox.options.sessions = ["tests", "lint", "types"]


def _runs(path: str | None) -> bool:
    return (
        bool(path) and subprocess.run([str(path), "--version"], capture_output=True).returncode == 0
    )


def _find(version: str) -> bool:
    """Is a working python{version} reachable? pyenv installs count even when
    not selected (its shim then fails), so their bin dirs join PATH."""
    if _runs(shutil.which(f"python{version}")):
        return True
    pattern = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")
    for path in sorted(glob.glob(pattern), reverse=True):
        if _runs(path):
            os.environ["PATH"] = os.path.dirname(path) + os.pathsep + os.environ["PATH"]
            return True
    return False


# every supported Python present on this machine
PYTHONS = [v for v in ("3.11", "3.12", "3.13") if _find(v)]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def coverage(session: nox.Session) -> None:
    """Branch coverage of the whole suite; fails below ``fail_under`` in pyproject.toml.

    ``coverage run -m pytest``, not ``pytest --cov``: trioflow's pytest plugin
    is loaded (and so imports trioflow) before pytest-cov would start
    measuring, which under-reports every module-level line.
    """
    session.install("-e", ".[test]", "coverage>=7.6")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
    session.run("coverage", "report")


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
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
