"""Small HTML building blocks for the report. Every number shown is tagged with its path in metrics.json
(`data-key`, a JSON list), so a test (or a person) can check that the page and the file agree."""

from __future__ import annotations

import json
from html import escape

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111827;background:#f9fafb}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{margin:0 0 4px} h2{margin-top:36px;border-bottom:2px solid #e5e7eb;padding-bottom:4px} h3{margin:18px 0 6px}
.muted{color:#6b7280} .cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:white;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:150px}
.card .v{font-size:24px;font-weight:600} .card .c{font-size:12px;color:#6b7280}
table{border-collapse:collapse;background:white;margin:8px 0;font-size:13px}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:right} th{background:#f3f4f6}
td.l,th.l{text-align:left} tr.worst td{background:#fee2e2;font-weight:600} tr.small td{color:#9ca3af}
.good{color:#15803d} .bad{color:#b91c1c} .plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
img.plot{background:white;border:1px solid #e5e7eb;max-width:100%} ul.verdicts li{margin:4px 0}
.gallery{display:flex;flex-wrap:wrap;gap:10px} .mistake{background:white;border:1px solid #e5e7eb;border-radius:6px;
padding:8px;width:240px;font-size:12px;overflow-wrap:anywhere} .mistake img{display:block;margin:0 auto 6px}
.snippet{font-family:ui-monospace,monospace;font-size:11px;color:#374151;margin-top:4px}
"""


def fmt(value, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return escape(str(value))


def num(value, key: list, digits: int = 4, signed: bool = False) -> str:
    """A number from metrics.json, tagged with its key path."""
    return f"<span data-key='{escape(json.dumps(key))}'>{fmt(value, digits, signed)}</span>"


def ci(value, key: list, digits: int = 4, signed: bool = False) -> str:
    """A [low, high] interval from metrics.json (or n/a), tagged with its key path."""
    if not value:
        return f"<span class='muted' data-key='{escape(json.dumps(key))}'>n/a</span>"
    return (f"<span class='muted' data-key='{escape(json.dumps(key))}'>"
            f"[{fmt(value[0], digits, signed)}, {fmt(value[1], digits, signed)}]</span>")


def with_ci(section: dict, name: str, key: list, signed: bool = False) -> str:
    return f"{num(section.get(name), key + [name], signed=signed)} {ci(section.get(f'{name}_ci'), key + [f'{name}_ci'], signed=signed)}"


def table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None,
          left: int = 1) -> str:
    """Cells are HTML already; the first `left` columns align left."""
    head = "".join(f"<th class='{'l' if i < left else ''}'>{escape(h)}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f" class='{row_classes[r]}'" if row_classes and row_classes[r] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td class='{'l' if i < left else ''}'>{cell}</td>"
                                          for i, cell in enumerate(row)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(png_base64: str, alt: str) -> str:
    return f"<img class='plot' alt='{escape(alt)}' src='data:image/png;base64,{png_base64}'>"


def verdict(gain: float | None, interval: list | None, what: str) -> str:
    """Plain words on whether a difference is distinguishable from zero at 95%."""
    if gain is None:
        return f"{what}: not defined on this data."
    if not interval:
        return f"{what}: {gain:+.4f} (no confidence interval: bootstrap is off)."
    if interval[0] > 0:
        return f"<span class='good'>{what}: {gain:+.4f}, 95% CI [{interval[0]:+.4f}, {interval[1]:+.4f}]: a real gain.</span>"
    if interval[1] < 0:
        return f"<span class='bad'>{what}: {gain:+.4f}, 95% CI [{interval[0]:+.4f}, {interval[1]:+.4f}]: a real loss.</span>"
    return (f"{what}: {gain:+.4f}, 95% CI [{interval[0]:+.4f}, {interval[1]:+.4f}]: not distinguishable from no "
            "difference on this data.")


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><main>{body}</main></body></html>\n")
