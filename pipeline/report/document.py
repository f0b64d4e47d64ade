"""The report as a list of blocks, rendered to markdown and to a self-contained HTML page from the same
blocks, so every number is the same in both."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

LONG = 12  # tables with more rows than this are collapsed in the HTML (and on GitHub)



@dataclass
class Block:
    kind: str  # h1 h2 h3 p list table img note details section
    text: str = ""
    items: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: str = ""
    children: list[Block] = field(default_factory=list)  # details, section: the blocks they fold
    lead: bool = False  # img: the report's first figure, sized to share the first screen with the headline


def details(summary: str, blocks: list[Block]) -> Block:
    return Block("details", summary, children=blocks)


def sections(blocks: list[Block]) -> list[Block]:
    """Each h2 and the blocks up to the next one as a `section`: a heading in the markdown, a heading that
    folds its blocks away until clicked in the HTML (where the reader first wants the findings, not the tables)."""
    out: list[Block] = []
    for b in blocks:
        if b.kind == "h2":
            out.append(Block("section", b.text))
        elif out and out[-1].kind == "section":
            out[-1].children.append(b)
        else:
            out.append(b)
    return out


def collapsed(summary: str, block: Block, n: int) -> Block:
    """`block` as is when it has at most LONG rows/items (`n`), else folded under `summary`."""
    return block if n <= LONG else details(summary, [block])


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "note":
            out.append("\n".join("> " + line for line in b.text.splitlines()))
        elif b.kind == "list":
            out.append("\n".join(f"- {x}" for x in b.items))
        elif b.kind == "table":
            out.append("\n".join(["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
                                 + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in b.rows]))
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path})")
        elif b.kind == "details":
            out.append(f"<details><summary>{html.escape(b.text)}</summary>\n\n{to_markdown(b.children)}\n</details>")
        elif b.kind == "section":
            out.append(f"## {b.text}\n\n{to_markdown(b.children)}")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """The little markdown the report uses inline (**bold**, `code`), escaped for HTML."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


TEXT_CELL = 40  # characters: a longer table cell is running text, not a number with its interval


def to_html(blocks: list[Block], directory: Path, title: str) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
           "table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:.25em .5em;"
           "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child,td.text{text-align:left}"
           "blockquote{border-left:4px solid #c60;margin:1em 0;padding:.3em 1em;background:#fff7ef}"
           "img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 .2em}")
    css += "details{margin:.6em 0}summary{cursor:pointer;color:#345;font-weight:600}"
    css += ("details.section>summary h2{display:inline;font-size:1.25em;margin:0}details.section{border-top:1px solid "
            "#ddd;padding-top:.3em}img.lead{max-height:66vh;width:auto}h1{font-size:1.6em;margin:.2em 0 .4em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>\n{_html_blocks(blocks, directory)}\n</body></html>")


def _td(cell: str) -> str:
    """A table cell: numbers right-aligned (the table's default), a cell of running text (a reason, a claim's
    numbers) left-aligned, where a ragged right edge reads as prose."""
    return f"<td class='text'>{_inline(cell)}</td>" if len(cell) > TEXT_CELL else f"<td>{_inline(cell)}</td>"


def _html_blocks(blocks: list[Block], directory: Path) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{_inline(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "note":
            out.append("<blockquote>" + "<br>".join(_inline(x) for x in b.text.splitlines()) + "</blockquote>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b.items) + "</ul>")
        elif b.kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.header) + "</tr>"
                       + "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in b.rows)
                       + "</table>")
        elif b.kind == "img":
            data = base64.b64encode((directory / b.path).read_bytes()).decode()
            lead = " class='lead'" if b.lead else ""
            out.append(f"<figure><img{lead} alt='{html.escape(b.text)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{_inline(b.text)}</figcaption></figure>")
        elif b.kind == "details":
            out.append(f"<details><summary>{_inline(b.text)}</summary>{_html_blocks(b.children, directory)}</details>")
        elif b.kind == "section":
            out.append(f"<details class='section'><summary><h2>{_inline(b.text)}</h2></summary>"
                       f"{_html_blocks(b.children, directory)}</details>")
    return "\n".join(out)

