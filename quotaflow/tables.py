"""The text formats the commands print rows in: CSV with a header, and columns aligned in
plain text (the audit's statements, the usage rows)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """`rows` as CSV with a header of `columns`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def aligned(columns: Sequence[str], cells: Sequence[Sequence[str]], left: int = 0) -> list[str]:
    """The header and the rows as lines of columns two spaces apart: the first `left` columns
    left-aligned, the rest (numbers) right-aligned."""
    widths = [max(len(name), *(len(row[i]) for row in cells)) if cells else len(name)
              for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i < left else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))

    return [line(columns), *(line(row) for row in cells)]
