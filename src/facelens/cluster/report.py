"""A self-contained HTML contact sheet of a clustered collection (thumbnails inline, no external files)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelens.sqlite import private_file

if TYPE_CHECKING:
    from facelens.cluster import Cluster, Collection

MAX_THUMBS = 40

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} .row{border-top:1px solid #ddd;padding:.6em 0}
.row h2{font-size:1em;margin:.2em 0} .faces img{width:72px;height:72px;margin:2px;border-radius:4px}
.src{color:#666;font-size:.85em} .muted{color:#888}
"""


def _img(thumb: bytes | None, title: str) -> str:
    if not thumb:
        return ""
    data = base64.b64encode(thumb).decode()
    return f'<img src="data:image/jpeg;base64,{data}" title="{html.escape(title)}" alt="face">'


def write_contact_sheet(collection: Collection, clusters: list[Cluster], summary: dict[str, Any], path: Path) -> None:
    conn = collection.connect()
    thumbs = {r[0]: r[1] for r in conn.execute("SELECT id, thumbnail FROM faces")}
    parts = [f"<!doctype html><meta charset='utf-8'><title>facelens clusters</title><style>{_STYLE}</style>",
             f"<h1>{len(clusters)} people in {summary['images']} photos</h1>",
             f"<p class=muted>{summary['faces']} faces: {summary['unassigned']} unassigned, "
             f"{summary['set_aside']} set aside (too small or unsure detections).</p>"]
    for c in clusters:
        label = html.escape(c.name) if c.name else f"Person {c.id}"
        faces = "".join(_img(thumbs.get(f), f"face {f}") for f in c.face_ids[:MAX_THUMBS])
        more = f" <span class=muted>+{len(c.face_ids) - MAX_THUMBS} more</span>" if len(c.face_ids) > MAX_THUMBS else ""
        sources = ", ".join(html.escape(Path(p).name) for p in c.images[:20])
        parts.append(f"<div class=row id='c{c.id}'><h2>{label} <span class=muted>· cluster {c.id} · "
                     f"{len(c.face_ids)} faces</span></h2><div class=faces>{faces}{more}</div>"
                     f"<div class=src>from {sources}{' …' if len(c.images) > 20 else ''}</div></div>")
    lone = [r[0] for r in conn.execute("SELECT id FROM faces WHERE cluster < 0 AND set_aside IS NULL LIMIT ?",
                                       (MAX_THUMBS,))]
    if lone:
        parts.append("<div class=row><h2>Unassigned <span class=muted>(no confident match)</span></h2>"
                     f"<div class=faces>{''.join(_img(thumbs.get(f), f'face {f}') for f in lone)}</div></div>")
    tmp = path.with_suffix(".tmp")
    with private_file(tmp) as fh:  # face thumbnails inside: owner-only
        fh.write("\n".join(parts) + "\n")
    tmp.replace(path)
