"""The report documents: report.md, a self-contained report.html and report.json.

A report is a title, an introduction and sections; a section holds paragraphs, tables and
figures (PNG files in the report folder). The Markdown links the PNGs by relative path (it is
read next to them, e.g. on GitHub); the HTML embeds them as base64 so that the one file can be
mailed or attached to a lab notebook; the JSON holds the numbers for scripts, plus the tables
and the figure paths so nothing in the prose is missing from the data.
"""
from __future__ import annotations

import base64
import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from segmodels.atomic import atomic_write_json, atomic_write_text
from segmodels.errors import MarsamError


@dataclass
class Table:
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""

    def __post_init__(self):
        for r in self.rows:
            if len(r) != len(self.columns):
                raise MarsamError(f"table {self.title!r}: a row has {len(r)} cells for "
                                  f"{len(self.columns)} columns")


@dataclass
class Figure:
    title: str
    path: Path      # the PNG, inside the report folder
    caption: str = ""


@dataclass
class Section:
    title: str
    paragraphs: Sequence[str] = field(default_factory=list)
    tables: Sequence[Table] = field(default_factory=list)
    figures: Sequence[Figure] = field(default_factory=list)


def format_cell(value: Any) -> str:
    """Numbers as people read them: 3 significant decimals, thousands separators, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def _rel(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, intro: Sequence[str], sections: Sequence[Section], folder: Path) -> str:
    out = [f"# {title}", ""]
    for p in intro:
        out += [p, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out += [f"**{t.title}**", ""]
            out.append("| " + " | ".join(_md_escape(c) for c in t.columns) + " |")
            out.append("|" + "|".join("---" for _ in t.columns) + "|")
            for r in t.rows:
                out.append("| " + " | ".join(_md_escape(format_cell(v)) for v in r) + " |")
            out.append("")
            if t.note:
                out += [f"_{t.note}_", ""]
        for f in s.figures:
            out += [f"**{f.title}**", "", f"![{f.title}]({_rel(f.path, folder)})", ""]
            if f.caption:
                out += [f"_{f.caption}_", ""]
    return "\n".join(out).rstrip() + "\n"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    """Escape, then the two Markdown marks the reports use: `code` and **bold**."""
    t = html.escape(str(text))
    t = _CODE.sub(r"<code>\1</code>", t)
    return _BOLD.sub(r"<strong>\1</strong>", t)


_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{border-bottom:2px solid #b5532e}h2{margin-top:2em;color:#8a3b1e}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#f4ebe6}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
img{max-width:100%;border:1px solid #ddd}figcaption,.note{color:#555;font-size:.9em}code{background:#f3f3f3;padding:0 .2em}"""


def render_html(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    out += [f"<p>{_inline_html(p)}</p>" for p in intro]
    for s in sections:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        out += [f"<p>{_inline_html(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            out.append(f"<h3>{html.escape(t.title)}</h3><table><thead><tr>"
                       + "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns) + "</tr></thead><tbody>")
            for r in t.rows:
                out.append("<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in r) + "</tr>")
            out.append("</tbody></table>")
            if t.note:
                out.append(f'<p class="note">{_inline_html(t.note)}</p>')
        for f in s.figures:
            data = base64.b64encode(Path(f.path).read_bytes()).decode("ascii")
            out.append(f"<figure><h3>{html.escape(f.title)}</h3>"
                       f'<img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
                       + (f"<figcaption>{_inline_html(f.caption)}</figcaption>" if f.caption else "")
                       + "</figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and Paths to plain JSON; NaN and inf to null (JSON has neither)."""
    import numpy as np
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value


def write_report(folder: str | os.PathLike, title: str, sections: Sequence[Section],
                 numbers: dict, intro: Sequence[str] = ()) -> dict[str, Path]:
    """Write report.md, report.html and report.json into ``folder``; returns their paths.

    ``numbers`` become the top level of report.json (the keys scripts read); the tables and the
    figure paths (relative to the folder) are added under ``tables`` and ``figures``. Every
    figure file must exist: a report that points at a missing figure is a bug, not a warning.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for s in sections:
        for f in s.figures:
            if not Path(f.path).is_file():
                raise MarsamError(f"report figure {f.path} does not exist; it was not drawn")
    paths = {"md": folder / "report.md", "html": folder / "report.html", "json": folder / "report.json"}
    atomic_write_text(paths["md"], render_markdown(title, intro, sections, folder))
    atomic_write_text(paths["html"], render_html(title, intro, sections))
    doc = dict(numbers)
    doc["tables"] = [{"section": s.title, "title": t.title, "columns": list(t.columns),
                      "rows": [list(r) for r in t.rows]} for s in sections for t in s.tables]
    doc["figures"] = {f.title: _rel(f.path, folder) for s in sections for f in s.figures}
    atomic_write_json(paths["json"], _jsonable(doc))
    return paths
