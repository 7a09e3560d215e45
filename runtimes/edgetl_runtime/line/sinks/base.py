"""What every sink is: the :class:`Sink` protocol and its error."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ...errors import EdgetlRuntimeError
from ..parts import Result


class SinkError(EdgetlRuntimeError, ValueError):
    """A sink string is malformed, or its extra is not installed (says which and what to do)."""


@runtime_checkable
class Sink(Protocol):
    """Takes one part's record; raises on a failed delivery (the runner retries it)."""

    name: str  # the sink string, also the key of its cursor in the history
    delivery: str  # "at-least-once" or "at-most-once"
    replay: bool  # resend from the history what a restart or an overflow had not delivered

    def send(self, record: dict[str, Any], result: Result | None) -> None:
        """Deliver ``record`` (the history row); ``result`` carries the images, None when replayed."""
        ...

    def close(self) -> None:
        ...

    # Optional: ``wants(record) -> bool``, records the sink acts on (others never queue); ``wants_images``
    # and ``capacity`` (a short queue: it holds images); ``details() -> dict`` for the status; ``wake``
    # (an attribute, None): the runner sets it to a callable the sink calls when it can deliver again
    # (a broker reconnected), which ends the runner's retry back-off at once.
