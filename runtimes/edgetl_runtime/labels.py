"""Labels files: one class name per output, and the one tolerated convention ("background").

>>> fit_labels(("background", "cat", "dog"), 2, "m.tflite")[0]
('cat', 'dog')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .contract import MAX_LABEL_CHARS, MAX_LABELS
from .errors import MetadataError

MAX_LABELS_FILE_BYTES = 32 * 2**20  # 100,000 labels of 256 characters and their line numbers fit


def read_labels(source: str | Path | Sequence[str]) -> tuple[str, ...]:
    """Return labels from a file (one per line, or pycoral's ``"0 cat"`` / ``"0: cat"``) or a list."""
    return read_labels_and_lines(source)[0]


def read_labels_and_lines(source: str | Path | Sequence[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Return :func:`read_labels`'s labels and, for each, its line in the file (its place in a list; 0: none)."""
    if not isinstance(source, (str, Path)):
        return tuple(str(s) for s in source), tuple(range(1, len(source) + 1))
    from .safefile import SpecialFile, TooLarge, read_regular

    path = Path(source)
    try:
        text = read_regular(path, MAX_LABELS_FILE_BYTES).decode("utf-8")
        text = text.removeprefix("\ufeff")  # a byte-order mark (Windows Notepad) is not part of the first label
        if text.count("\n") > 2 * MAX_LABELS:  # before splitting: 16 million short lines would take a gigabyte
            raise MetadataError(f"{source}: {text.count(chr(10)):,} lines; a model has at most {MAX_LABELS:,} labels")
        lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    except SpecialFile:
        raise MetadataError(f"{source}: not a regular file; give the path of a text file with one label per line") from None
    except TooLarge:
        raise MetadataError(f"{source}: is not a labels file (at most {MAX_LABELS:,} labels of {MAX_LABEL_CHARS} "
                            f"characters, {MAX_LABELS_FILE_BYTES >> 20} MiB)") from None
    except OSError as exc:
        raise MetadataError(f"{source}: cannot read labels file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{source}: the labels file is not UTF-8 text (byte {exc.start}); save it as UTF-8, "
                            "e.g. iconv -f latin1 -t utf-8") from None
    lines = [(number, line) for number, line in lines if line]
    numbered = [(number, re.match(r"^(\d+)[:\s]\s*(.+)$", line)) for number, line in lines]
    if lines and all(m for _, m in numbered):
        by_id = {int(m.group(1)): (m.group(2).strip(), number) for number, m in numbered if m}
        if max(by_id) >= MAX_LABELS:
            raise MetadataError(f"{source}: label number {max(by_id)} is past the {MAX_LABELS:,} labels a model may have")
        found = [by_id.get(i, (str(i), 0)) for i in range(max(by_id) + 1)]
        return tuple(name for name, _ in found), tuple(number for _, number in found)
    if not lines:
        raise MetadataError(f"{source}: labels file is empty; write one label per line")
    return tuple(line for _, line in lines), tuple(number for number, _ in lines)


def distinct_labels(labels: tuple[str, ...], where: str,
                    lines: Sequence[int] | None = None) -> tuple[tuple[str, ...], str | None]:  # fmt: skip
    """Return ``(labels, note)`` with a repeated label told apart by its output, and a note saying which.

    A model's output index is the truth and a label only a name for people: Google's own ImageNet
    labels file names "crane" twice (the bird and the machine). The second one becomes
    ``"crane (output 517)"``, and ``note`` names the file, the lines (``lines``: each label's line
    in the file) and the label.
    """
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        seen.setdefault(name, []).append(i)
    repeated = {name: places for name, places in seen.items() if len(places) > 1}
    if not repeated:
        return labels, None
    renamed = list(labels)
    for places in repeated.values():
        for i in places[1:]:
            renamed[i] = f"{labels[i]} (output {i})"
    place = (lambda i: f"line {lines[i]}" if lines[i] else f"output {i}") if lines else (lambda i: f"output {i}")  # noqa: E731
    shown = "; ".join(f"{_short(name)!r} at {', '.join(place(i) for i in places[:10])}"
                      for name, places in list(repeated.items())[:5])  # fmt: skip
    more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
    return tuple(renamed), (f"{where}: the same label more than once: {shown}{more}. Each output keeps its own "
                            "result; the later ones are shown as 'NAME (output N)'")  # fmt: skip


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def fit_labels(labels: tuple[str, ...], n_outputs: int, where: str) -> tuple[tuple[str, ...], str | None]:
    """Return ``(labels, note)``: ``labels`` when they match ``n_outputs``, else an error.

    The one exception is the ImageNet "background" convention: a labels file whose first line is
    exactly ``background`` for a model without that output (1001 lines, 1000 outputs). That line
    is dropped and ``note`` says so. Any other mismatch would shift every label by one.
    """
    if len(labels) == n_outputs:
        return labels, None
    if len(labels) == n_outputs + 1 and labels[0] == "background":  # callers drop the first line number too
        return labels[1:], (f"{where}: the labels file has {len(labels)} lines for {n_outputs} outputs; its first "
                            "line 'background' (the ImageNet convention) was dropped")  # fmt: skip
    raise MetadataError(
        f"{where}: the model has {n_outputs} outputs but the labels file has {len(labels)} labels; "
        "pass a labels file with exactly one line per output class, in output order"
    )
