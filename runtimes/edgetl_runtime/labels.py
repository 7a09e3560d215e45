"""Labels files: one class name per output, and the one tolerated convention ("background").

>>> fit_labels(("background", "cat", "dog"), 2, "m.tflite")[0]
('cat', 'dog')
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Sequence

from .contract import MAX_LABEL_CHARS, MAX_LABELS
from .errors import MetadataError

MAX_LABELS_FILE_BYTES = 32 * 2**20  # 100,000 labels of 256 characters and their line numbers fit


def read_labels(source: str | Path | Sequence[str]) -> tuple[str, ...]:
    """Return labels from a file (one per line, or pycoral's ``"0 cat"`` / ``"0: cat"``) or a list."""
    if not isinstance(source, (str, Path)):
        return tuple(str(s) for s in source)
    path = Path(source)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise MetadataError(f"{source}: not a regular file; give the path of a text file with one label per line")
        if st.st_size > MAX_LABELS_FILE_BYTES:
            raise MetadataError(f"{source}: {st.st_size:,} bytes is not a labels file (at most {MAX_LABELS:,} labels "
                                f"of {MAX_LABEL_CHARS} characters, {MAX_LABELS_FILE_BYTES >> 20} MiB)")
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 2 * MAX_LABELS:  # before splitting: 16 million short lines would take a gigabyte
            raise MetadataError(f"{source}: {text.count(chr(10)):,} lines; a model has at most {MAX_LABELS:,} labels")
        lines = [line.strip() for line in text.splitlines()]
    except OSError as exc:
        raise MetadataError(f"{source}: cannot read labels file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{source}: the labels file is not UTF-8 text (byte {exc.start}); save it as UTF-8, "
                            "e.g. iconv -f latin1 -t utf-8") from None
    lines = [line for line in lines if line]
    numbered = [re.match(r"^(\d+)[:\s]\s*(.+)$", line) for line in lines]
    if lines and all(numbered):
        by_id = {int(m.group(1)): m.group(2).strip() for m in numbered if m}
        if max(by_id) >= MAX_LABELS:
            raise MetadataError(f"{source}: label number {max(by_id)} is past the {MAX_LABELS:,} labels a model may have")
        return tuple(by_id.get(i, str(i)) for i in range(max(by_id) + 1))
    if not lines:
        raise MetadataError(f"{source}: labels file is empty; write one label per line")
    return tuple(lines)


def fit_labels(labels: tuple[str, ...], n_outputs: int, where: str) -> tuple[tuple[str, ...], str | None]:
    """Return ``(labels, note)``: ``labels`` when they match ``n_outputs``, else an error.

    The one exception is the ImageNet "background" convention: a labels file whose first line is
    exactly ``background`` for a model without that output (1001 lines, 1000 outputs). That line
    is dropped and ``note`` says so. Any other mismatch would shift every label by one.
    """
    if len(labels) == n_outputs:
        return labels, None
    if len(labels) == n_outputs + 1 and labels[0] == "background":
        return labels[1:], (f"{where}: the labels file has {len(labels)} lines for {n_outputs} outputs; its first "
                            "line 'background' (the ImageNet convention) was dropped")  # fmt: skip
    raise MetadataError(
        f"{where}: the model has {n_outputs} outputs but the labels file has {len(labels)} labels; "
        "pass a labels file with exactly one line per output class, in output order"
    )
