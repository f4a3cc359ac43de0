"""The pieces of the HTML reports (``report.html`` of ``vaezoo evaluate`` and ``vaezoo benchmark``).

One self-contained file that opens from disk: pictures are embedded as ``data:`` URIs, the style and
the table-sorting script are inline, nothing refers to the network. Every text that goes into the
page (model names, reasons, metric names) is escaped here, by :func:`escape`.

A :class:`Table` is the one structure a report's table is built as; :func:`markdown_table` and
:func:`sortable_table` are its two renderings, so report.md and report.html show the same rows.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The first bytes of each picture format a report embeds -> its MIME type.
PICTURE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"\xff\xd8\xff": "image/jpeg",
}
MISSING = "–"  # the text of a table cell without a value


@dataclass
class Cell:
    """One table cell: the text shown and, for a number, the raw value it sorts by."""

    text: str
    value: float | None = None


def number_cell(value: float | None, formatter: Callable[[float], str]) -> Cell:
    """A numeric cell showing ``formatter(value)``, or :data:`MISSING` when ``value`` is None."""
    if value is None:
        return Cell(MISSING)
    return Cell(formatter(value), value)


@dataclass
class Table:
    """Headers and rows of cells, rendered as markdown by :func:`markdown_table` and as HTML by
    :func:`sortable_table`."""

    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)


def escape(text: object) -> str:
    """``text`` as HTML text or attribute value: ``<``, ``>``, ``&`` and both quotes escaped."""
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- markdown


def markdown_table(table: Table) -> list[str]:
    """The table as markdown lines; a ``|`` inside a cell becomes ``/`` (it would end the cell)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"

    lines = [line(table.headers), "|" + "---|" * len(table.headers)]
    return lines + [line([cell.text for cell in row]) for row in table.rows]


# --------------------------------------------------------------------------- HTML


def sort_key(value: float) -> str | None:
    """The ``data-value`` of a number: its exact repr, as JavaScript's ``parseFloat`` reads it (None
    for NaN, which sorts with the empty cells, last)."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(int(value)) if isinstance(value, int) else repr(float(value))


def sortable_table(table: Table) -> str:
    """The table as HTML that sorts by a column when its header is clicked (see :data:`SORT_SCRIPT`):
    a column with any number sorts numerically by the cells' ``data-value``."""
    numeric = [any(row[i].value is not None for row in table.rows) for i in range(len(table.headers))]
    head = "".join(
        f'<th scope="col"{" data-numeric" if is_numeric else ""}>{escape(header)}</th>'
        for header, is_numeric in zip(table.headers, numeric, strict=True)
    )
    body = "\n".join(
        "<tr>"
        + "".join(_html_cell(cell, is_numeric) for cell, is_numeric in zip(row, numeric, strict=True))
        + "</tr>"
        for row in table.rows
    )
    table_html = (
        f'<table class="sortable">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'
    )
    return f'<div class="wide">{table_html}</div>'  # a wide table scrolls, not the page


def _html_cell(cell: Cell, numeric: bool) -> str:
    key = sort_key(cell.value) if cell.value is not None else None
    value = f' data-value="{escape(key)}"' if key is not None else ""
    align = ' class="num"' if numeric else ""
    return f"<td{value}{align}>{escape(cell.text)}</td>"


def picture_type(data: bytes) -> str | None:
    """The MIME type of a picture file's bytes, by their signature (None if not a known picture)."""
    for signature, mime in PICTURE_SIGNATURES.items():
        if data.startswith(signature):
            return mime
    return None


def data_uri(path: Path) -> str | None:
    """The file as a ``data:`` URI of its real picture type; None if it is missing, unreadable or not
    a PNG, GIF or JPEG."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    mime = picture_type(data)
    if mime is None:
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def embedded_picture(name: str, path: Path) -> str:
    """A heading with ``name`` and the picture file embedded, or a short note that it is missing."""
    uri = data_uri(path)
    if uri is None:
        shown = f'<p class="note">{escape(Path(path).name)}: not shown (missing, unreadable or not a PNG, GIF or JPEG)</p>'
    else:
        shown = f'<img src="{uri}" alt="{escape(name)}">'
    return f"<figure><figcaption><h3>{escape(name)}</h3></figcaption>{shown}</figure>"


def picture_gallery(pictures: dict[str, str], folder: Path) -> str:
    """Every picture of a report (name -> file in ``folder``), embedded one after the other."""
    return "\n".join(embedded_picture(name, Path(folder) / file) for name, file in pictures.items())


def page(title: str, body: str) -> str:
    """A whole HTML document around ``body`` (already HTML), with the style and the sorting script."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n{body}\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption h3 { margin: 0.3em 0; font-size: 1em; }
details { margin: 0.6em 0; border: 1px solid #ddd; padding: 0.3em 0.8em; }
summary { cursor: pointer; font-weight: bold; }
.note { color: #777; font-style: italic; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""

# Click a header: sort its table by that column, ascending, then descending on the next click.
# Numeric columns compare the cells' data-value; cells without a key (empty, n/a) stay last.
SORT_SCRIPT = """
(function () {
  function key(cell, numeric) {
    if (numeric) {
      var value = cell.hasAttribute("data-value") ? parseFloat(cell.getAttribute("data-value")) : NaN;
      return isNaN(value) ? null : value;
    }
    var text = cell.textContent.trim();
    return text === "" ? null : text;
  }
  function compare(a, b, ascending) {
    if (a === null || b === null) { return a === b ? 0 : (a === null ? 1 : -1); }
    var order = typeof a === "number" ? a - b : a.localeCompare(b, undefined, {numeric: true});
    return ascending ? order : -order;
  }
  function sortBy(header) {
    var table = header.closest("table"), body = table.tBodies[0], column = header.cellIndex;
    var numeric = header.hasAttribute("data-numeric");
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows).map(function (row) {
      return {row: row, key: key(row.cells[column], numeric)};
    });
    rows.sort(function (a, b) { return compare(a.key, b.key, ascending); });
    rows.forEach(function (item) { body.appendChild(item.row); });
  }
  document.querySelectorAll("table.sortable th").forEach(function (header) {
    header.tabIndex = 0;
    header.addEventListener("click", function () { sortBy(header); });
    header.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(header); }
    });
  });
})();
"""
