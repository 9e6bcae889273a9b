"""What a dataset holds before anyone trains on it: images, patients, lesions per class, files that cannot be read.

``mccad datasets check PATH --format F`` calls :func:`check_dataset`: it reads the dataset through the same reader
training uses (:func:`training.datasets.readers.read_dataset`), but lets the reader list the records it cannot
resolve instead of stopping at the first, then opens every image (its header, or with ``decode`` its pixels exactly
as training decodes them) with a progress bar, so that a missing file or a truncated download shows up in minutes,
not hours into a run.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from training.datasets.readers import read_dataset
from training.datasets.samples import Sample


@dataclass
class DatasetReport:
    """Counts of one dataset as read, and the problems found (messages naming the file and the record)."""

    format: str
    path: str
    images: int = 0
    patients: int = 0
    breasts: int = 0
    images_by_label: dict[str, int] = field(default_factory=dict)
    images_by_split: dict[str, int] = field(default_factory=dict)
    images_with_lesions: int = 0
    lesions: int = 0
    lesions_by_label: dict[str, int] = field(default_factory=dict)
    lesions_by_category: dict[str, int] = field(default_factory=dict)
    lesions_by_calc_type: dict[str, int] = field(default_factory=dict)
    lesions_by_distribution: dict[str, int] = field(default_factory=dict)
    lesions_by_assessment: dict[str, int] = field(default_factory=dict)
    #: images per value of each image-level attribute with few values (CMMD abnormality and subtype, breast density,
    #: breast BI-RADS...)
    images_by_attribute: dict[str, dict[str, int]] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.images > 0 and not self.unresolved and not self.unreadable

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}

    def text(self, examples: int = 10) -> str:
        """The report as lines for a terminal; at most ``examples`` problem messages of each kind."""

        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

        lines = [f"{self.format} dataset at {self.path}",
                 f"  images      {self.images} ({counts(self.images_by_label)})",
                 f"  patients    {self.patients}, breasts {self.breasts}"]
        if self.images_by_split:
            lines.append(f"  splits      {counts(self.images_by_split)}")
        lines.append(f"  lesions     {self.lesions} on {self.images_with_lesions} images "
                     f"({counts(self.lesions_by_label)})")
        for name, d in (("categories", self.lesions_by_category), ("calc types", self.lesions_by_calc_type),
                        ("distribution", self.lesions_by_distribution), ("assessment", self.lesions_by_assessment)):
            if d:
                lines.append(f"  {name:<11} {counts(d)}")
        for name, d in self.images_by_attribute.items():
            lines.append(f"  {name:<11} {counts(d)} (images)")
        for name, items in (("unresolved records", self.unresolved), ("unreadable images", self.unreadable)):
            lines.append(f"  {name}: {len(items)}")
            lines.extend(f"    {m}" for m in items[:examples])
            if len(items) > examples:
                lines.append(f"    ... {len(items) - examples} more")
        lines.append("OK" if self.ok else "PROBLEMS FOUND" if self.images else "NO IMAGES")
        return "\n".join(lines)


def _sorted_counts(values: Iterable[object]) -> dict[str, int]:
    c = Counter(str(v) for v in values if v is not None)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


#: an image attribute with more distinct values than this (age, for one) is not counted value by value
MAX_ATTRIBUTE_VALUES = 20


def summarise(samples: Sequence[Sample], fmt: str, path: Path) -> DatasetReport:
    """The counts of a list of samples (no file is opened)."""
    lesions = [les for s in samples for les in s.lesions]
    names = sorted({name for s in samples for name, _ in s.attributes})
    by_attribute = {name: _sorted_counts(s.attrs.get(name) for s in samples) for name in names}
    return DatasetReport(
        format=fmt, path=str(path), images=len(samples), patients=len({s.patient_id for s in samples}),
        breasts=len({s.breast_key for s in samples}), images_by_label=_sorted_counts(s.label for s in samples),
        images_by_split=_sorted_counts(s.split for s in samples),
        images_with_lesions=sum(1 for s in samples if s.lesions), lesions=len(lesions),
        lesions_by_label=_sorted_counts(les.label for les in lesions),
        lesions_by_category=_sorted_counts(les.category for les in lesions),
        lesions_by_calc_type=_sorted_counts(les.calc_type for les in lesions),
        lesions_by_distribution=_sorted_counts(les.distribution for les in lesions),
        lesions_by_assessment=_sorted_counts(les.assessment for les in lesions),
        images_by_attribute={k: v for k, v in by_attribute.items() if len(v) <= MAX_ATTRIBUTE_VALUES})


def image_problem(sample: Sample, decode: bool = False) -> str | None:
    """Why the sample's image cannot be read (None when it can). DICOM: its header parsed and its Pixel Data whole
    (the SCP's own check, :func:`dicom_io.scp.check_pixel_data`: a few bytes read, never the pixels); raster files:
    their header. With ``decode``, the pixels themselves through the decoder training uses."""
    path = Path(sample.source)
    if not path.is_file():
        return f"{sample.image_id}: {path} does not exist"
    try:
        if decode:
            from training.datasets.images import load_pixels

            load_pixels(sample)
        elif sample.is_dicom:
            from dicom_io.scp import check_pixel_data, read_header_at

            ds, offset = read_header_at(path)
            if not int(getattr(ds, "Rows", 0) or 0) or not int(getattr(ds, "Columns", 0) or 0):
                return f"{sample.image_id}: {path} has no image (no Rows / Columns)"
            check_pixel_data(path, ds, offset)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.verify()
    except Exception as exc:  # every decoder error is a finding of the check, not a crash
        return f"{sample.image_id}: {path} cannot be read: {type(exc).__name__}: {exc}"
    return None


def check_dataset(path: Path, fmt: str, *, image_root: Path | None = None, split: str | None = None,
                  other_findings: str = "exclude", decode: bool = False, progress: bool = True) -> DatasetReport:
    """Read a dataset as training would and open each of its images; every problem is listed, none raises
    (except a dataset that cannot be read at all: a missing table, an unknown format)."""
    unresolved: list[str] = []
    samples = read_dataset(path, fmt, image_root=image_root, split=split,
                           other_findings=other_findings,  # type: ignore[arg-type]
                           skipped=unresolved, progress=progress)
    report = summarise(samples, fmt, path)
    report.unresolved = unresolved
    items: Iterable[Sample] = samples
    if progress and samples:
        items = tqdm(samples, desc="images", unit="img")
    report.unreadable = [p for p in (image_problem(s, decode) for s in items) if p is not None]
    return report
