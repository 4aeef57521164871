"""Self-contained HTML: escaped text, base64 images, inline CSS, no script.

Everything that comes from the dataset or the run (paths, class names, config values) passes
through :func:`esc`; the page carries a Content-Security-Policy that forbids scripts and any
request, so even a mistake here could not make the browser run or fetch anything.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:0 24px 48px;
color:#222;line-height:1.4}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f4f4f4}
td.t,th.t{text-align:left}
img.plot{max-width:100%;display:block;margin:8px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:10px}
figure{margin:0;padding:6px;border:1px solid #ddd;border-radius:4px;font-size:12px;text-align:center;
overflow-wrap:anywhere}
figure img{width:96px;height:96px;image-rendering:pixelated;object-fit:contain;background:#eee}
.old{color:#c44e52}.new{color:#2a7d3f;font-weight:600}.drop{color:#777;font-style:italic}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:22px}
"""


def esc(value: Any) -> str:
    """HTML-escape any value's text (quotes included, so it is safe in attributes too)."""
    return html.escape(str(value), quote=True)


def img_tag(png: bytes, alt: str, cls: str = "plot") -> str:
    """An ``<img>`` with the PNG embedded as base64."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{esc(cls)}" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: Sequence[int] = (0,),
          cls: str = "") -> str:
    """An HTML table; cells are escaped, floats shown with 4 significant digits."""
    def cell(tag: str, j: int, v: Any) -> str:
        align = ' class="t"' if j in text_columns else ""
        shown = f"{v:.4g}" if isinstance(v, float) else v
        return f"<{tag}{align}>{esc(shown)}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", j, v) for j, v in enumerate(r)) + "</tr>" for r in rows)
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cards(items: Sequence[tuple[str, Any]]) -> str:
    """Key numbers as a row of boxes."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in items) + "</div>"


def figure(png: bytes, alt: str, lines: Sequence[str], title: str) -> str:
    """A thumbnail with caption lines (each already HTML, built from escaped parts) and a tooltip."""
    caption = "<br>".join(lines)
    return f'<figure title="{esc(title)}">{img_tag(png, alt, "thumb")}<figcaption>{caption}</figcaption></figure>'


def section(anchor: str, title: str, body: str) -> str:
    """A titled section."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    """The whole document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>'
            + "".join(sections) + "</body></html>\n")
