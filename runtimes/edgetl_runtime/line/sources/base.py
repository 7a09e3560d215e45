"""What every source is: the :class:`Source` protocol, its error, and the ``?a=1&b=2`` options of a source string."""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable
from urllib.parse import parse_qsl

from ...errors import EdgetlRuntimeError
from ..parts import Part, Stop


class SourceError(EdgetlRuntimeError, ValueError):
    """A source string is malformed or names something that cannot be opened (says which and what to do)."""


@runtime_checkable
class Source(Protocol):
    """Parts for the line. ``parts`` blocks until the next part, and returns when the source is done or ``stop`` is set."""

    name: str  # how results name it: the source string
    live: bool  # True: drop the oldest frame when behind; False: wait (never lose a part)

    def parts(self, stop: Stop) -> Iterator[Part]:
        ...

    def done(self, part: Part, result: object) -> None:
        """The part's row is committed (a folder source may move the file now)."""
        ...

    def status(self) -> dict:
        """Return what the station page and the status API show of the source (reconnects, last error)."""
        ...

    def close(self) -> None:
        ...


def options(query: str) -> dict[str, str]:
    """Return the ``?a=1&b=2`` options of a source or sink string."""
    return dict(parse_qsl(query, keep_blank_values=True))


def typed(given: dict[str, str], spec: str, known: dict[str, type]) -> dict[str, object]:
    """Return the options ``given`` converted to the types ``known`` declares; unknown ones are an error."""
    out: dict[str, object] = {}
    for name, text in given.items():
        if name not in known:
            raise SourceError(f"{spec}: unknown option {name!r}; this source takes {', '.join(sorted(known)) or 'none'}")
        kind = known[name]
        try:
            out[name] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
        except ValueError:
            raise SourceError(f"{spec}: option {name}={text!r} is not a {kind.__name__}") from None
    return out
