"""Fail with the install command when the client this package needs is missing."""

try:
    import coredis as coredis
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "trioflow.redis needs the coredis client: the redis extra, "
        "pip install '.[redis]' in a clone of trioflow"
    ) from exc
