"""Retry policy and backoff schedules for pipeline stages.

Pure numbers: a :class:`Backoff` says how long to wait before attempt
``n + 1``; the stage runtime does the (cancellable) sleeping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Final, cast, final

import attrs

from .._util import check_fraction, check_positive_number, raise_type

__all__ = ["Backoff", "Retry", "RetryPredicate"]

# One shared generator for jitter. Jitter only needs to de-correlate retries,
# not to be unpredictable; tests that need exact delays pass jitter=0.
_rng: Final = random.Random()


@final
@attrs.frozen
class Backoff:
    """How long to wait between attempts: ``initial``, then times ``factor``, up to ``maximum``.

    Build one with :meth:`exponential` or :meth:`constant`. The delay before
    retry ``n`` (``n = 1`` after the first failed attempt) is
    ``min(initial * factor ** (n - 1), maximum)``, then *jittered*: a fraction
    ``jitter`` of it is replaced by a uniformly random amount, so the delay is
    drawn from ``[d * (1 - jitter), d]``. ``jitter=1.0`` is the "full jitter"
    that spreads a herd of clients retrying the same overloaded service.
    """

    initial: float
    """The delay before the first retry, in seconds."""
    factor: float
    """The growth factor between retries (1.0 for a constant delay)."""
    maximum: float
    """No delay exceeds this, in seconds (``math.inf`` for no cap)."""
    jitter: float
    """The fraction of each delay that is random, between 0 and 1."""

    @classmethod
    def exponential(
        cls,
        initial: float,
        *,
        factor: float = 2.0,
        maximum: float = math.inf,
        jitter: float = 1.0,
    ) -> Backoff:
        """Delays ``initial``, ``initial * factor``, ... capped at ``maximum``, full jitter by default.

        Raises:
          ValueError: if ``initial`` is negative, ``factor`` below 1, ``maximum``
            below ``initial`` or ``jitter`` outside [0, 1].
        """
        initial = check_positive_number(initial, "initial", allow_zero=True)
        if isinstance(factor, bool) or not isinstance(factor, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise_type("factor", "a number", factor)
        if not (math.isfinite(factor) and factor >= 1.0):
            raise ValueError(f"factor must be >= 1, got {factor!r}")
        if isinstance(maximum, bool) or not isinstance(maximum, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise_type("maximum", "a number", maximum)
        if math.isnan(maximum) or maximum < initial:
            raise ValueError(f"maximum must be >= initial ({initial!r}), got {maximum!r}")
        return cls(initial, float(factor), float(maximum), check_fraction(jitter, "jitter"))

    @classmethod
    def constant(cls, delay: float, *, jitter: float = 0.0) -> Backoff:
        """The same ``delay`` before every retry (jittered by ``jitter``, none by default).

        Raises:
          ValueError: if ``delay`` is negative or ``jitter`` outside [0, 1].
        """
        delay = check_positive_number(delay, "delay", allow_zero=True)
        return cls(delay, 1.0, delay, check_fraction(jitter, "jitter"))

    def delay(self, retry: int) -> float:
        """The delay in seconds before retry number ``retry`` (1 for the second attempt)."""
        base = self.initial
        if self.factor != 1.0 and retry > 1:
            # Cap the exponent: factor ** huge overflows long before it matters.
            base = self.initial * self.factor ** min(retry - 1, 1000)
        base = min(base, self.maximum)
        if self.jitter:
            base -= base * self.jitter * _rng.random()
        return base


#: ``retry_on=`` as a predicate: ``True`` if the exception is worth another attempt.
RetryPredicate = Callable[[Exception], bool]


def _check_retry_on(
    value: object,
) -> tuple[type[BaseException], ...] | RetryPredicate:
    if callable(value) and not isinstance(value, type):
        return cast(RetryPredicate, value)
    items: tuple[object, ...] = value if isinstance(value, tuple) else (value,)  # pyright: ignore[reportUnknownVariableType]
    out: list[type[BaseException]] = []
    for item in items:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise TypeError(
                "retry_on must be an Exception subclass, a tuple of them, or a predicate "
                f"on the exception, got {value!r}"
            )
        out.append(item)
    if not out:
        raise ValueError("retry_on must name at least one exception type, got ()")
    return tuple(out)


_NO_BACKOFF: Final = Backoff(0.0, 1.0, 0.0, 0.0)


@final
@attrs.frozen(init=False)
class Retry:
    """Try an item up to ``attempts`` times in all (the first attempt included).

    Between attempts the worker sleeps ``backoff.delay(n)`` (a cancellable
    :func:`trio.sleep`; it holds no limiter token and no rate token while it
    sleeps). Only exceptions that ``retry_on`` accepts are retried: it is an
    exception type or a tuple of them (default: every :class:`Exception`,
    including the :class:`trio.TooSlowError` of a stage ``timeout=``), or a
    predicate ``retry_on(exc) -> bool`` (say, "an HTTP error with a 5xx
    status"); a predicate runs in the worker, synchronously, and an exception
    it raises fails the item like the attempt's own. Cancellation is never
    retried. When the last attempt fails, the stage's ``on_error`` policy
    decides.

    .. versionchanged:: 0.1
       ``retry_on`` also accepts a predicate.
    """

    attempts: int
    """Attempts in all, the first included (``Retry(attempts=1)`` never retries)."""
    backoff: Backoff
    """The delays between attempts (none by default)."""
    retry_on: tuple[type[BaseException], ...] | RetryPredicate
    """The exception types worth another attempt, or a predicate on the exception."""

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: Backoff | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] | RetryPredicate = Exception,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise_type("attempts", "an int", attempts)
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts!r}")
        if backoff is None:
            backoff = _NO_BACKOFF
        elif not isinstance(backoff, Backoff):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise_type("backoff", "a trioflow.Backoff or None", backoff)
        self.__attrs_init__(attempts, backoff, _check_retry_on(retry_on))  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]

    def retries(self, exc: Exception) -> bool:
        """Whether ``exc`` (a failed attempt's exception) is worth another attempt."""
        retry_on = self.retry_on
        if isinstance(retry_on, tuple):
            return isinstance(exc, retry_on)
        return bool(retry_on(exc))
