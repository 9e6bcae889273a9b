"""Small synthetic 4-view MG studies for the worker tests (real DICOM files written by ``dicom_io.mg_writer``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicom_io.mg_writer import MGInstanceSpec, write_mg_instance
from dicom_io.uids import derive_uid

VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


@dataclass
class SyntheticStudy:
    study_uid: str
    paths: list[Path]
    sop_uids: list[str]


def write_study(folder: Path, name: str, *, rows: int = 320, columns: int = 256, views: int = 4,
                seed: int = 0) -> SyntheticStudy:
    """A study of ``views`` small MG instances with a bright blob and specks (calcification-like) in each."""
    rng = np.random.default_rng(seed)
    study_uid = derive_uid("mccad-test-study", name)
    series_uid = derive_uid("mccad-test-series", name)
    paths, sop_uids = [], []
    for i, (lat, view) in enumerate(VIEWS[:views]):
        yy, xx = np.mgrid[0:rows, 0:columns]
        breast = np.exp(-(((yy - rows / 2) / (rows / 2.2)) ** 2 + ((xx - (0 if lat == "R" else columns)) /
                                                                     (columns / 1.3)) ** 2))
        pixels = 300 + 2500 * breast + rng.normal(0, 40, (rows, columns))
        for _ in range(6):
            y, x = rng.integers(20, rows - 20), rng.integers(20, columns - 20)
            pixels[y - 1:y + 2, x - 1:x + 2] = 4000
        sop_uid = derive_uid("mccad-test-sop", name, str(i))
        spec = MGInstanceSpec(patient_id=f"TEST-{name}", patient_name="Test^Synthetic", study_uid=study_uid,
                              series_uid=series_uid, sop_uid=sop_uid, laterality=lat, view=view,
                              pixel_spacing_mm=0.2, study_date="20261126", accession=name[:16],
                              frame_of_reference_uid=derive_uid("mccad-test-for", name),
                              instance_number=i + 1)
        sop_uids.append(sop_uid)
        paths.append(write_mg_instance(Path(folder) / f"{name}-{i}.dcm",
                                       np.clip(pixels, 0, 4095).astype(np.uint16), spec))
    return SyntheticStudy(study_uid, paths, sop_uids)


def spool_study(settings, study: SyntheticStudy) -> None:
    """Put a study into the spool and the ledger as the SCP would after acknowledging it."""
    from dicom_io.spool import Spool
    from worker.ledger import Ledger

    spool, ledger = Spool(settings.spool_dir), Ledger(settings.effective_ledger_url)
    for sop_uid, path in zip(study.sop_uids, study.paths, strict=True):
        stored = spool.store(study.study_uid, sop_uid, path.read_bytes())
        ledger.record_instance(study.study_uid, sop_uid, str(stored), size_bytes=stored.stat().st_size)
    ledger.close()


def wait_for_state(ledger, study_uid: str, states: set[str], timeout_s: float = 240.0, interval_s: float = 0.2):
    """The study's ledger record once it is in one of ``states``; TimeoutError naming the state it is stuck in."""
    import time

    deadline = time.monotonic() + timeout_s
    record = None
    while time.monotonic() < deadline:
        record = ledger.get(study_uid)
        if record is not None and record.state in states:
            return record
        time.sleep(interval_s)
    raise TimeoutError(f"study not in {sorted(states)} after {timeout_s} s: {record}")
