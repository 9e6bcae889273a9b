"""Everything written for one analysed study: ``result.json``, overlay and heatmap PNGs, a one-page HTML summary, and
the DICOM result objects (TID 1500 SR, Mammography CAD SR, heatmap SEG, GSPS) that the worker sends to PACS.

Used by both ``mccad analyze`` (a folder for a person) and the worker task (a folder per study, then C-STORE), so the
two can never disagree about what a result looks like.
"""
from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from dicom_io.durable import write_durably, write_text_durably
from dicom_io.outputs import write_result_objects
from models.pipeline import Analysis
from models.results import ImageResult, StudyResult
from models.types import MammogramImage

#: Longest side of the PNGs written for people; mammograms are 3-5k pixels, a browser needs far fewer.
PREVIEW_MAX_SIDE = 1400
COLOURS = {"malignant": (230, 40, 40), "benign": (40, 200, 80)}


@dataclass
class StudyOutputs:
    out_dir: Path
    result_json: Path
    overlays: list[Path] = field(default_factory=list)
    heatmaps: list[Path] = field(default_factory=list)
    html: Path | None = None
    dicom_objects: list[Path] = field(default_factory=list)

    def all_files(self) -> list[Path]:
        return [self.result_json, *self.overlays, *self.heatmaps, *([self.html] if self.html else []),
                *self.dicom_objects]


def write_study_outputs(analysis: Analysis, images: list[MammogramImage], out_dir: Path, *,
                        sources: dict[str, pydicom.Dataset] | None = None, dicom: bool = True,
                        pictures: bool = True) -> StudyOutputs:
    """Write the study's outputs durably under ``out_dir``. ``sources`` are the source headers by SOP Instance UID;
    when omitted they are re-read (header only) from each image's ``meta.source_path``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analysis.result
    outputs = StudyOutputs(out_dir=out_dir, result_json=out_dir / "result.json")
    write_text_durably(outputs.result_json, result.model_dump_json(indent=2))
    by_uid = {img.meta.sop_instance_uid: img for img in images}
    if pictures:
        for image_result in result.images:
            img = by_uid.get(image_result.sop_instance_uid)
            if img is None:
                continue
            stem = _stem(image_result)
            overlay = out_dir / f"overlay-{stem}.png"
            write_durably(overlay, _png_bytes(render_overlay(img.pixels, image_result, result.warnings)))
            outputs.overlays.append(overlay)
            heat = analysis.heatmaps.get(image_result.sop_instance_uid)
            if heat is not None and image_result.heatmap:
                path = out_dir / image_result.heatmap
                write_durably(path, _png_bytes(render_heatmap(img.pixels, heat)))
                outputs.heatmaps.append(path)
    if dicom:
        if sources is None:
            sources = {uid: pydicom.dcmread(img.meta.source_path, stop_before_pixels=True)
                       for uid, img in by_uid.items() if img.meta.source_path}
        objects = write_result_objects(result, sources, analysis.heatmaps, out_dir / "dicom")
        outputs.dicom_objects = [o.path for o in objects]
    if pictures:  # last, so that the page links every file written above
        outputs.html = out_dir / "index.html"
        write_text_durably(outputs.html, render_html(result, outputs))
    return outputs


def _stem(image: ImageResult) -> str:
    side = image.laterality or "U"
    view = image.view or "view"
    return f"{side}{view}-{image.sop_instance_uid[-12:]}".replace("/", "_")


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


#: Rows of a unit image turned into 8-bit grey per step hold about this many pixels, so that no float copy of a
#: whole (up to 80 Mpx) image is made for a picture a browser sees at 1400 px.
GREY_BLOCK_PIXELS = 1 << 22


def unit_to_grey(values: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (clipped) as 8-bit grey, ``(clip(v, 0, 1) * 255)`` truncated, block by block of rows:
    the uint8 result is the only allocation of the image's size."""
    out = np.empty(values.shape, np.uint8)
    step = max(1, GREY_BLOCK_PIXELS // max(1, values.shape[1]))
    for start in range(0, values.shape[0], step):
        out[start:start + step] = (np.clip(values[start:start + step], 0, 1) * 255).astype(np.uint8)
    return out


def _preview(pixels: np.ndarray) -> tuple[Image.Image, float]:
    rows, cols = pixels.shape
    scale = min(1.0, PREVIEW_MAX_SIDE / max(rows, cols))
    grey = Image.fromarray(unit_to_grey(pixels), mode="L")
    if scale < 1.0:
        grey = grey.resize((max(1, round(cols * scale)), max(1, round(rows * scale))), Image.Resampling.BOX)
    return grey.convert("RGB"), scale


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_overlay(pixels: np.ndarray, image: ImageResult, warnings: list[str]) -> Image.Image:
    """The mammogram with each lesion boxed and labelled, a legend, the image verdict and any warning banner."""
    canvas, scale = _preview(pixels)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, canvas.width // 60))
    for lesion in image.lesions:
        x0, y0, x1, y1 = (v * scale for v in lesion.box.as_tuple())
        colour = COLOURS[lesion.label]
        pad = 3
        draw.rectangle([x0 - pad, y0 - pad, x1 + pad, y1 + pad], outline=colour, width=2)
        draw.text((x0, max(0, y0 - pad - font.size - 2)), f"#{lesion.lesion_id} {lesion.caption()}",
                  fill=colour, font=font)
    lines = [f"{image.laterality or '?'} {image.view or '?'}: {image.caption()} ({len(image.lesions)} lesion(s))"]
    if image.sppnet_malignancy_probability is not None:
        lines.append(f"SPPNet P(malignant) {image.sppnet_malignancy_probability:.2f}")
    y = 4
    for line in lines:
        draw.text((6, y), line, fill=(255, 255, 0), font=font)
        y += font.size + 4
    legend_y = canvas.height - 2 * (font.size + 6) - 4
    for k, (name, colour) in enumerate(COLOURS.items()):
        yy = legend_y + k * (font.size + 6)
        draw.rectangle([6, yy, 6 + font.size, yy + font.size], outline=colour, width=2)
        draw.text((12 + font.size, yy), name, fill=colour, font=font)
    for k, warning in enumerate(warnings):
        draw.text((6, y + k * (font.size + 4)), warning, fill=(255, 80, 80), font=font)
    return canvas


def render_heatmap(pixels: np.ndarray, heatmap: np.ndarray) -> Image.Image:
    """The detector's malignancy activation blended over the image (jet colour map, 45 % opacity where active)."""
    from matplotlib import colormaps

    canvas, scale = _preview(pixels)
    heat = Image.fromarray(unit_to_grey(heatmap), mode="L").resize(canvas.size, Image.Resampling.BILINEAR)
    h = np.asarray(heat, dtype=np.float32) / 255.0
    rgb = (colormaps["jet"](h)[..., :3] * 255).astype(np.float32)
    alpha = (0.45 * h)[..., None]
    base = np.asarray(canvas, dtype=np.float32)
    return Image.fromarray((base * (1 - alpha) + rgb * alpha).astype(np.uint8), mode="RGB")


#: The header row of :func:`image_rows`' table.
IMAGE_TABLE_HEAD = ("<tr><th>image</th><th>label</th><th>P(malignant) FPNNet</th><th>P(malignant) SPPNet</th>"
                    "<th>lesions</th>\n<th>overlay / heatmap</th></tr>")


def image_rows(result: StudyResult, overlays: set[str], *, prefix: str = "", heatmaps: bool = True,
               height: int = 320) -> str:
    """One ``<tr>`` per image of ``result`` under :data:`IMAGE_TABLE_HEAD`: view, label, P(malignant) of FPNNet and
    SPPNet, every lesion (id, caption, box, sub-type probabilities) and thumbnails ``height`` pixels high linking to
    its pictures: the overlay when its file name is in ``overlays``, the heatmap when ``heatmaps``. ``prefix`` goes
    before every file name, so a page outside the study's folder links into it (``"<folder>/"``)."""
    e = html.escape
    rows = []
    for img in result.images:
        overlay = f"overlay-{_stem(img)}.png"
        names = [overlay] if overlay in overlays else []
        if heatmaps and img.heatmap:
            names.append(img.heatmap)
        pics = "".join(f'<a href="{e(prefix + n)}"><img src="{e(prefix + n)}" alt="{e(n)}" height="{height}"></a> '
                       for n in names)
        lesions = "".join(
            f"<li>#{les.lesion_id} {e(les.caption())} box=({les.box.x0:.0f},{les.box.y0:.0f})-"
            f"({les.box.x1:.0f},{les.box.y1:.0f})"
            + (f" invasive(incl.)={les.invasive_incl_microinvasion_probability:.2f}"
               if les.invasive_incl_microinvasion_probability is not None else "")
            + (f" ER+={les.er_positive_probability:.2f}" if les.er_positive_probability is not None else "")
            + "</li>" for les in img.lesions)
        rows.append(f"<tr><td>{e(img.laterality or '?')} {e(img.view or '?')}</td><td>{e(img.label)}</td>"
                    f"<td>{img.malignancy_probability:.3f}</td><td>{_fmt(img.sppnet_malignancy_probability)}</td>"
                    f"<td><ul>{lesions or '<li>none</li>'}</ul></td><td>{pics}</td></tr>")
    return "".join(rows)


#: The style of the result pages (this one and ``worker.index_page``'s).
PAGE_STYLE = """body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse} td,th{border:1px solid #999;
padding:4px 8px;vertical-align:top} .warn{color:#b00;font-weight:bold}"""


def render_html(result: StudyResult, outputs: StudyOutputs) -> str:
    """One self-contained page: verdicts per exam, breast and image, every lesion, links to every picture."""
    e = html.escape
    rows = image_rows(result, {p.name for p in outputs.overlays})
    breasts = "".join(f"<tr><td>{e(b.laterality or '?')}</td><td>{e(b.label)}</td><td>{b.malignancy_probability:.3f}"
                      f"</td><td>{b.probability:.3f}</td></tr>" for b in result.breasts)
    warnings = "".join(f'<p class="warn">{e(w)}</p>' for w in result.warnings)
    models = ", ".join(f"{e(m.role)}: {e(m.name)} {e(m.version)}" for m in result.models)
    dicom = "".join(f'<li><a href="dicom/{e(p.name)}">{e(p.name)}</a></li>' for p in outputs.dicom_objects)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mccad result</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Microcalcification CAD result</h1>{warnings}
<p>Exam: <b>{e(result.exam.caption())}</b>. Models: {models}.</p>
<h2>Breasts (CC + MLO fused, paper section 2.7)</h2>
<table><tr><th>side</th><th>label</th><th>P(malignant)</th><th>confidence</th></tr>{breasts}</table>
<h2>Images</h2>
<table>{IMAGE_TABLE_HEAD}{rows}</table>
<h2>Files</h2><ul><li><a href="result.json">result.json</a></li>{dicom}</ul>
</body></html>
"""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def load_result(path: Path) -> StudyResult:
    return StudyResult.model_validate(json.loads(Path(path).read_text()))
