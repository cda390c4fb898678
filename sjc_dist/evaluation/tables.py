"""Tables of formatted cells and their HTML and Markdown forms: the one writer every report uses (the benchmark
report, the validation section)."""
import html
import math
from dataclasses import dataclass


@dataclass
class Table:
    """A titled table of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


def fmt(v, digits: int = 3) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def fmt_p(p: float) -> str:
    return "<0.001" if math.isfinite(p) and p < 0.001 else fmt(p)


def table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    note = f"<p class='note'>{html.escape(t.note)}</p>" if t.note else ""
    return f"<h2>{html.escape(t.title)}</h2>\n<table>\n<tr>{head}</tr>\n{body}\n</table>\n{note}\n"


def table_markdown(t: Table) -> str:
    def cell(c: str) -> str:
        return c.replace("|", "\\|")

    lines = [f"## {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in t.rows]
    return "\n".join(lines + ([f"\n{t.note}"] if t.note else []) + [""])
