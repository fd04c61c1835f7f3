"""The public face: every public name is re-exported, documented, and reports its public module."""

from __future__ import annotations

import importlib.metadata
import inspect
import pathlib
import re
import types

import pytest

import trioflow as tf
import trioflow.redis

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PUBLIC_MODULES: list[types.ModuleType] = [
    tf,
    tf.adaptive,
    tf.telemetry,
    tf.debug,
    tf.testing,
    trioflow.redis,  # the test extra installs its client
]


def public_names() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for mod in PUBLIC_MODULES:
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for name in names:
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType) or name == "__version__":
                continue
            out.append((f"{mod.__name__}.{name}", obj))
    return out


DOCUMENTED = set(
    re.findall(
        r"^\.\. auto(?:class|exception|function|data):: (\S+)",
        "\n".join(p.read_text() for p in DOCS.glob("*.md")),
        flags=re.M,
    )
)


@pytest.mark.parametrize(("qualname", "obj"), public_names(), ids=lambda v: str(v))
def test_public_name_is_documented(qualname: str, obj: object) -> None:
    assert qualname in DOCUMENTED, f"{qualname} has no autodoc entry in docs/*.md"
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"{qualname} has no docstring"
        # Reprs, tracebacks and the reference show where users import it from.
        assert obj.__module__ == qualname.rsplit(".", 1)[0]


def test_the_contract_names_exist() -> None:
    # The names DESIGN.md promises.
    for name in [
        "CapacityLimiter", "PriorityLimiter", "Lane", "RateLimiter", "Limiter", "Permit",
        "LimiterStatistics", "open_task_group", "amap", "run_all", "Pipeline", "Retry",
        "Backoff", "PipelineReport", "StageReport", "DeadLetter",
    ]:  # fmt: skip
        assert hasattr(tf, name), name
    for name in ["AIMD", "Vegas", "Gradient2", "LoadFeedback", "Sample"]:
        assert hasattr(tf.adaptive, name), name
    for name in ["configure", "use"]:
        assert hasattr(tf.telemetry, name), name
    for name in ["dump_tasks", "find_deadlocks", "install", "serve", "TaskDump", "TaskInfo",
                 "FrameInfo", "BlockedOn", "Deadlock"]:  # fmt: skip
        assert hasattr(tf.debug, name), name


@pytest.mark.parametrize(
    "mod", [m for m in PUBLIC_MODULES if hasattr(m, "__all__")], ids=lambda m: m.__name__
)
def test_all_lists_every_public_name(mod: types.ModuleType) -> None:
    # Test lists are derived from __all__ (the algorithms, the documented
    # names), so a public name missing from it would go untested.
    public = {n for n in vars(mod) if not n.startswith("_")}
    public -= {n for n in public if isinstance(getattr(mod, n), types.ModuleType)} - set(
        mod.__all__
    )
    public -= {"annotations"}  # from __future__ import annotations
    assert sorted(mod.__all__) == sorted(set(mod.__all__)), "duplicates in __all__"
    assert set(mod.__all__) == public


def test_every_exported_algorithm_is_in_the_adaptive_test_lists() -> None:
    from tests.adaptive.helpers import ALGORITHMS, NOT_ALGORITHMS

    assert set(tf.adaptive.__all__) >= NOT_ALGORITHMS
    assert set(ALGORITHMS) == set(tf.adaptive.__all__) - NOT_ALGORITHMS
    for name, make in ALGORITHMS.items():
        # Only algorithms: the names left out are exactly the non-algorithms.
        assert isinstance(make(), tf.adaptive.Algorithm), name
    for name in NOT_ALGORITHMS:
        obj = getattr(tf.adaptive, name)
        assert obj is tf.adaptive.Algorithm or not hasattr(obj, "update"), name


def test_the_package_ships_its_data_files() -> None:
    # Run against an installed wheel (CI does), these fail if packaging left them out.
    root = pathlib.Path(tf.__file__).parent
    assert (root / "py.typed").is_file()
    assert (root / "debug" / "taskdump.schema.json").is_file()


def test_version_matches_the_distribution() -> None:
    assert tf.__version__ == importlib.metadata.version("trioflow")
