"""Markdown for ``report.md`` from text the user controls (a genome's or a file's name, a path, an exception's
message): each piece stays inside its line, table cell or code span, and HTML in it shows as written."""
from __future__ import annotations

import html
import re
from typing import Any

from nas.errors import printable


def text(value: Any) -> str:
    """Prose on one line, whitespace runs made one space, HTML escaped."""
    return html.escape(printable(" ".join(str(value).split())), quote=False)


def cell(value: Any) -> str:
    """``text`` as one table cell: a pipe would end the cell."""
    return text(value).replace("|", "\\|")


def code(value: Any, in_table: bool = False) -> str:
    """Inline code on one line: no backtick ends the span early (and in a table, no pipe ends the cell)."""
    span = "`" + printable(str(value)).replace("`", "'") + "`"
    return span.replace("|", "\\|") if in_table else span


def fenced(body: str, info: str) -> list[str]:
    """``body`` in a code fence longer than any run of backticks in it (a genome's name may hold one that would
    close a shorter fence and let the rest be read as markdown or HTML)."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", body)), default=0))
    return [fence + info, body, fence]
