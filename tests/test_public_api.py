"""The public face: every public name is re-exported, documented, and reports its public module."""

from __future__ import annotations

import inspect
import pathlib
import re
import types

import pytest

import trioflow as tf

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PUBLIC_MODULES: list[types.ModuleType] = [tf, tf.adaptive, tf.telemetry, tf.debug, tf.testing]


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
        r"^\.\. auto(?:class|function|data):: (\S+)",
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
