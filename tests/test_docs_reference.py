"""The built API reference shows, for every public class, what a user calls on it.

Inherited members count (``tf.CapacityLimiter`` gets ``acquire``, ``release``,
``hold`` and ``async with`` from private mixins), and so do the special
methods that give a class its shape (``async with``, ``async for``, ``[name]``).

The check reads the HTML that Sphinx built: set ``TRIOFLOW_DOCS_HTML`` to a
finished build (CI does, after its ``sphinx-build -W``) or let the test build
the docs itself (needs the ``docs`` extra; about half a minute).
"""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.test_public_api import public_names

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The special methods that are how a class is used.
USED_AS = {"__aenter__", "__aiter__", "__enter__", "__getitem__"}
# Defined only to refuse: `async with PriorityLimiter` raises TypeError naming the lanes.
NOT_FOR_USERS = {("trioflow.PriorityLimiter", "__aenter__")}


def public_classes() -> list[tuple[str, type]]:
    return [(qualname, obj) for qualname, obj in public_names() if inspect.isclass(obj)]


def members_a_user_calls(cls: type) -> list[str]:
    """Public methods, properties and fields, wherever in trioflow they are defined."""
    found: list[str] = []
    for name in dir(cls):
        if name.startswith("_") and name not in USED_AS:
            continue
        owner = next((base for base in cls.__mro__ if name in vars(base)), None)
        if owner is None or not owner.__module__.startswith("trioflow"):
            continue  # object, tuple, typing and abc machinery
        found.append(name)
    return found


@pytest.fixture(scope="module")
def documented_ids(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    built = os.environ.get("TRIOFLOW_DOCS_HTML")
    if built:
        html_dir = pathlib.Path(built)
    else:
        pytest.importorskip("sphinx", reason="building the docs needs the docs extra")
        if not (ROOT / "docs" / "conf.py").is_file():
            pytest.skip("no docs/ beside the tests")
        html_dir = tmp_path_factory.mktemp("html")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sphinx",
                "-W",
                "-q",
                "-b",
                "html",
                str(ROOT / "docs"),
                str(html_dir),
            ],
            check=True,
            timeout=600,
        )
    pages = list(html_dir.rglob("*.html"))
    assert pages, f"no HTML in {html_dir}"
    return set(
        re.findall(
            r'<dt class="sig sig-object py" id="([^"]+)"', "".join(p.read_text() for p in pages)
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize(("qualname", "cls"), public_classes(), ids=lambda v: str(v))
def test_every_class_entry_lists_what_a_user_calls(
    documented_ids: set[str], qualname: str, cls: type
) -> None:
    assert qualname in documented_ids, f"{qualname} has no entry in the built reference"
    missing = [
        name
        for name in members_a_user_calls(cls)
        if f"{qualname}.{name}" not in documented_ids and (qualname, name) not in NOT_FOR_USERS
    ]
    assert not missing, f"the reference entry of {qualname} does not show {missing}"


@pytest.mark.slow
def test_capacity_limiter_shows_its_inherited_api(documented_ids: set[str]) -> None:
    # The methods the issue found listed only under the abstract tf.Limiter.
    for name in ["acquire", "release", "hold", "borrowed_tokens", "__aenter__"]:
        assert f"trioflow.CapacityLimiter.{name}" in documented_ids


def test_the_landing_page_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = (ROOT / "docs" / "index.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", page, flags=re.S | re.M)
    assert blocks, "docs/index.md lost its example"
    exec(compile(blocks[0], "docs/index.md", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out.split()
    # every page fetched, each once: the sizes of the twenty URLs
    assert sorted(map(int, printed)) == sorted(len(f"https://example.com/{i}") for i in range(20))


def test_no_page_or_message_installs_trioflow_from_the_package_index() -> None:
    """No release is on the package index: every install line must work from a clone (issue 17)."""
    import trioflow

    wrong = re.compile(r"""pip install ['"]?trioflow\b""")
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted(pathlib.Path(trioflow.__file__).parent.rglob("*.py"))
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if wrong.search(line) and "finds nothing" not in line
    ]
    assert found == []
