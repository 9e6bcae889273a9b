"""What a mammogram's header says about itself: laterality, view, exam grouping and the archive quirks met on the way.

Pure functions of a pydicom ``Dataset`` (no I/O). The standard places for the facts are the MG Image module
(PS3.3 C.8.11.7: Image Laterality (0020,0062), View Code Sequence (0054,0220)) and the DX Positioning module
(C.8.11.5: View Position (0018,5101)). Real archives do not always fill them: CBIS-DDSM, for instance, writes
Secondary Capture objects whose laterality is only in the series-level Laterality (0020,0060), whose view sits in
Patient Orientation (0020,0020) as the text ``"CC"``, and whose Patient ID folds patient, side and view together
(``Mass-Test_P_00173_RIGHT_CC``). Every fact taken from a place other than the standard one is named in the returned
quirks, so that a reviewer can see what was inferred rather than read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from dicom_io.uids import derive_uid
from models.types import Laterality, View

MAMMOGRAPHY_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
}
SECONDARY_CAPTURE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}

#: View Position (0018,5101) defined terms (PS3.3 C.8.11.5.1.1) mapped to our views.
_VIEW_POSITION: dict[str, View] = {
    "CC": "CC", "MLO": "MLO", "ML": "ML", "LM": "LM", "XCCL": "XCCL", "LMO": "LMO", "SIO": "SIO",
}

#: View codes of CID 4014 "View for Mammography": SNOMED CT (SCT) and the legacy SNOMED RT (SRT) values that
#: older modalities still send.
_VIEW_CODES: dict[str, View] = {
    "399162004": "CC", "R-10242": "CC",
    "399368009": "MLO", "R-10226": "MLO",
    "399260004": "ML", "R-10224": "ML",
    "399352003": "LM", "R-10230": "LM",
    "399192003": "XCCL", "R-1024A": "XCCL",
}

# Text forms met in Patient ID, Series Description and misused Patient Orientation. Word boundaries are any
# non-letter so that ``P_00173_RIGHT_CC`` and ``L-MLO`` both split into words.
_SIDE_WORD = re.compile(r"(?<![A-Z])(LEFT|RIGHT)(?![A-Z])")
_SIDE_VIEW_WORD = re.compile(r"(?<![A-Z])([LR])[ _\-]?(XCCL|MLO|CC|ML|LM)(?![A-Z])")
_VIEW_WORD = re.compile(r"(?<![A-Z])(XCCL|MLO|CC|ML|LM)(?![A-Z])")
#: A Patient ID that ends in side and view is a per-image ID with the patient folded in (CBIS-DDSM style).
_FOLDED_PATIENT_ID = re.compile(
    r"^(?P<patient>.+?)[ _\-](?:LEFT|RIGHT|L|R)[ _\-](?:XCCL|MLO|CC|ML|LM)(?:[ _\-]\d+)?$", re.IGNORECASE
)
#: A genuine Patient Orientation value (PS3.3 C.7.6.1.1.1) is made of the letters A P R L H F only.
_ORIENTATION_VALUE = re.compile(r"^[APRLHF]+$")


@dataclass
class HeaderFacts:
    """Laterality, view and exam key read from one header, with the quirks that explain any inference."""

    laterality: Laterality | None
    view: View | None
    exam_key: str
    quirks: list[str] = field(default_factory=list)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _orientation_is_text(ds: Dataset) -> bool:
    """True when Patient Orientation holds free text (such as a view name) rather than direction letters."""
    raw = _text(ds, "PatientOrientation").strip()
    if not raw:
        return False
    return not all(_ORIENTATION_VALUE.match(part.strip().upper()) for part in raw.split("\\") if part.strip())


def _text_sources(ds: Dataset) -> list[tuple[str, str]]:
    """The free-text fields we may read laterality and view from, in order of trust, with their quirk names."""
    sources = []
    if _orientation_is_text(ds):
        sources.append(("patient-orientation", _text(ds, "PatientOrientation")))
    sources.append(("patient-id", _text(ds, "PatientID")))
    sources.append(("series-description", _text(ds, "SeriesDescription")))
    return [(name, text.upper()) for name, text in sources if text.strip()]


def _laterality_from_text(text: str) -> set[str]:
    found = {m.group(1)[0] for m in _SIDE_WORD.finditer(text)}
    found |= {m.group(1) for m in _SIDE_VIEW_WORD.finditer(text)}
    return found


def _view_from_text(text: str) -> set[str]:
    found = {m.group(2) for m in _SIDE_VIEW_WORD.finditer(text)}
    found |= {m.group(1) for m in _VIEW_WORD.finditer(text)}
    return found


def read_laterality(ds: Dataset, quirks: list[str]) -> Laterality | None:
    """Image Laterality (0020,0062), else Laterality (0020,0060), else the side named in free text (recorded)."""
    image_side = _text(ds, "ImageLaterality").strip().upper()
    series_side = _text(ds, "Laterality").strip().upper()
    if image_side in ("L", "R"):
        if series_side in ("L", "R") and series_side != image_side:
            quirks.append("laterality-conflict-0020,0062-vs-0020,0060")
        return image_side  # type: ignore[return-value]
    if series_side in ("L", "R"):
        quirks.append("laterality-from-0020,0060")
        return series_side  # type: ignore[return-value]
    for source, text in _text_sources(ds):
        sides = _laterality_from_text(text)
        if len(sides) == 1:
            quirks.append(f"laterality-from-{source}-text")
            return sides.pop()  # type: ignore[return-value]
        if len(sides) > 1:
            quirks.append(f"laterality-ambiguous-{source}-text")
    quirks.append("laterality-unknown")
    return None


def read_view(ds: Dataset, quirks: list[str]) -> View | None:
    """View Position (0018,5101), else View Code Sequence (0054,0220), else the view named in free text (recorded)."""
    position = _text(ds, "ViewPosition").strip().upper()
    if position:
        return _VIEW_POSITION.get(position, "OTHER")
    for item in ds.get("ViewCodeSequence") or []:
        code = str(item.get("CodeValue", "")).strip()
        if code:
            quirks.append("view-from-view-code-sequence")
            return _VIEW_CODES.get(code, "OTHER")
    for source, text in _text_sources(ds):
        views = _view_from_text(text)
        if len(views) == 1:
            quirks.append(f"view-from-{source}-text")
            return views.pop()  # type: ignore[return-value]
        if len(views) > 1:
            quirks.append(f"view-ambiguous-{source}-text")
    quirks.append("view-unknown")
    return None


def exam_key_and_quirk(ds: Dataset) -> tuple[str, str | None]:
    """The exam grouping key and, when it is not the Study Instance UID, the quirk that explains it.

    Normally one examination is one study, so the key is the Study Instance UID. Some archives (CBIS-DDSM) give
    every image its own study and fold the side and view into a per-image Patient ID; there the images of one
    visit share only the patient part of the ID, so the key is a UID derived from that part (PS3.5 B.2 ``2.25``
    root: safe as a path component and not re-identifying).
    """
    patient_id = _text(ds, "PatientID").strip()
    folded = _FOLDED_PATIENT_ID.match(patient_id)
    if folded:
        key = derive_uid("mccad-exam-key", "folded-patient-id", folded.group("patient").upper())
        return key, "exam-key-from-folded-patient-id"
    return str(ds.get("StudyInstanceUID", "")), None


def exam_key_of(ds: Dataset) -> str:
    """The one rule everyone uses to group the images of one examination (see :func:`exam_key_and_quirk`)."""
    return exam_key_and_quirk(ds)[0]


def read_header_facts(ds: Dataset) -> HeaderFacts:
    """Laterality, view, exam key and quirks of one instance header."""
    quirks: list[str] = []
    laterality = read_laterality(ds, quirks)
    view = read_view(ds, quirks)
    key, key_quirk = exam_key_and_quirk(ds)
    if key_quirk:
        quirks.append(key_quirk)
    return HeaderFacts(laterality=laterality, view=view, exam_key=key, quirks=quirks)


def pixel_spacing_mm(ds: Dataset, quirks: list[str]) -> tuple[float, float] | None:
    """Pixel Spacing (0028,0030), else Imager Pixel Spacing (0018,1164) (detector plane, recorded as a quirk)."""
    for keyword, quirk in (("PixelSpacing", None), ("ImagerPixelSpacing", "spacing-from-imager-pixel-spacing")):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                quirks.append(f"unreadable-{keyword}")
                continue
            if row > 0 and col > 0:
                if quirk:
                    quirks.append(quirk)
                return (row, col)
    return None
