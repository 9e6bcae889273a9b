"""One HTML page over many analysed studies, side by side: what ``mccad demo`` shows a newcomer at the end.

Each study is a folder written by :func:`worker.outputs.write_study_outputs` (``result.json``, ``overlay-*.png``,
``index.html``). The page gives every study a card: its exam verdict, its views and lesion count, the per-image table
of the study's own page (:func:`worker.outputs.image_rows`: verdicts, lesions, overlay thumbnails) and links to the
study's ``index.html`` and ``result.json``. Links are relative to the page, so the folder can be moved or zipped.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from dicom_io.durable import write_text_durably
from models.results import StudyResult
from worker.outputs import IMAGE_TABLE_HEAD, PAGE_STYLE, image_rows, load_result

#: Height in pixels of the overlay thumbnails on the page.
THUMBNAIL_HEIGHT = 200


@dataclass(frozen=True)
class StudyEntry:
    """One study on the page: ``name`` is how the page titles it (no patient data), ``folder`` its outputs."""

    name: str
    folder: Path


def write_index(studies: list[StudyEntry], path: Path, *, title: str = "mccad results") -> Path:
    """Write the page for ``studies`` (in the order given) to ``path`` durably and return ``path``.

    Raises ``FileNotFoundError`` for a study folder without ``result.json``: a study that was not analysed has no card.
    """
    path = Path(path)
    results = [(entry, load_result(entry.folder / "result.json")) for entry in studies]
    cards = [_card(entry, result, path.parent) for entry, result in results]
    e = html.escape
    warnings = "".join(f'<p class="warn">{e(w)}</p>' for w in dict.fromkeys(w for _, r in results for w in r.warnings))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{PAGE_STYLE} .studies{{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}}
.study{{border:1px solid #ccc;padding:0 1em 1em;font-size:85%}}</style></head><body>
<h1>{e(title)}</h1>{warnings}
<p>{len(studies)} studies. Each card: the exam's verdict, then per image its verdict, lesions and overlay
(click a picture for full size).</p>
<div class="studies">{''.join(cards)}</div>
</body></html>
"""
    write_text_durably(path, page)
    return path


def _card(entry: StudyEntry, result: StudyResult, page_dir: Path) -> str:
    e = html.escape
    rel = Path(os.path.relpath(entry.folder, page_dir)).as_posix()
    overlays = {p.name for p in entry.folder.glob("overlay-*.png")}
    lesions = sum(len(img.lesions) for img in result.images)
    views = " ".join(f"{img.laterality or '?'}{img.view or '?'}" for img in result.images)
    return (f'<div class="study"><h2>{e(entry.name)}: {e(result.exam.caption())}</h2>'
            f"<p>{e(views)}; {lesions} lesion(s). "
            f'<a href="{e(rel)}/index.html">study page</a> · <a href="{e(rel)}/result.json">result.json</a></p>'
            f"<table>{IMAGE_TABLE_HEAD}"
            f"{image_rows(result, overlays, prefix=rel + '/', heatmaps=False, height=THUMBNAIL_HEIGHT)}</table></div>")
