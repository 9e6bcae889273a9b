"""The MG writer makes Digital Mammography For Presentation instances that dciodvfy accepts and our reader reads."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.mg_writer import MG_FOR_PRESENTATION, MGInstanceSpec, MGWriteError, build_mg_dataset, write_mg_instance
from dicom_io.uids import derive_uid

#: dciodvfy warnings we accept, each with its reason. dicom3tools only knows the DX defined terms of View Position
#: (AP, PA, LL, ...); mammography systems put the mammographic view there (CC, MLO), readers rely on it, and the
#: coded view (ViewCodeSequence, CID 4014), which dciodvfy does check, is also present.
ALLOWED_WARNINGS = ("Unrecognized defined term <CC> for value 1 of attribute <View Position>",
                    "Unrecognized defined term <MLO> for value 1 of attribute <View Position>")


def dciodvfy_problems(path: Path) -> tuple[list[str], list[str]]:
    """(errors, unexpected warnings) that dciodvfy reports for ``path``."""
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy (Debian package dicom3tools) is needed: `make system-deps` installs it"
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning") and not line.endswith(ALLOWED_WARNINGS)]
    return errors, warnings


def make_spec(laterality: str = "L", view: str = "CC", **changes) -> MGInstanceSpec:
    fields = dict(
        patient_id="TEST01", patient_name="Test^Writer", study_uid=derive_uid("writer", "study"),
        series_uid=derive_uid("writer", "series", laterality, view), sop_uid=derive_uid("writer", laterality, view),
        laterality=laterality, view=view, pixel_spacing_mm=0.07, study_date="20260315", accession="ACC1",
        frame_of_reference_uid=derive_uid("writer", "frame"),
    )
    fields.update(changes)
    return MGInstanceSpec(**fields)


@pytest.mark.parametrize("laterality,view", [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")])
def test_written_instance_passes_dciodvfy_and_reads_back(tmp_path, laterality, view):
    pixels = np.random.default_rng(0).integers(0, 4096, size=(96, 64), dtype=np.uint16)
    path = write_mg_instance(tmp_path / f"{laterality}{view}.dcm", pixels, make_spec(laterality, view))
    errors, warnings = dciodvfy_problems(path)
    assert errors == [] and warnings == []

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == MG_FOR_PRESENTATION and ds.file_meta.MediaStorageSOPClassUID == MG_FOR_PRESENTATION
    assert (ds.BitsStored, ds.PhotometricInterpretation, ds.PresentationIntentType) == (12, "MONOCHROME2",
                                                                                        "FOR PRESENTATION")
    assert ds.ImageLaterality == laterality and ds.ViewPosition == view
    assert ds.ViewCodeSequence[0].CodeValue == {"CC": "399162004", "MLO": "399368009"}[view]
    assert [float(v) for v in ds.PixelSpacing] == [0.07, 0.07]
    assert np.array_equal(ds.pixel_array, pixels)

    from dicom_io.reader import read_mammogram

    image = read_mammogram(path)
    assert (image.meta.laterality, image.meta.view) == (laterality, view)
    assert image.meta.pixel_spacing_mm == pytest.approx((0.07, 0.07))
    assert np.allclose(image.pixels, pixels / 4095.0, atol=1.0 / 4095)


def test_the_window_is_linear_by_default_without_a_voi_lut_function_ohif_mishandles():
    """The VOI LUT is a window over the 12-bit range whose function is LINEAR by its absence (PS3.3 C.11.2.1.2):
    OHIF 3.13 turns a present VOI LUT Function into its first character and then cannot render the image."""
    ds = build_mg_dataset(np.zeros((8, 8), dtype=np.uint16), make_spec())
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (2048.0, 4096.0)
    assert "VOILUTFunction" not in ds


def test_the_builder_refuses_what_cannot_be_a_valid_instance():
    pixels = np.zeros((8, 8), dtype=np.uint16)
    with pytest.raises(MGWriteError, match="12 bits"):
        build_mg_dataset(np.full((8, 8), 4096, dtype=np.uint16), make_spec())
    with pytest.raises(MGWriteError, match="uint16"):
        build_mg_dataset(pixels.astype(np.float32), make_spec())
    with pytest.raises(MGWriteError, match="laterality"):
        build_mg_dataset(pixels, make_spec(laterality="B"))
    with pytest.raises(MGWriteError, match="view"):
        build_mg_dataset(pixels, make_spec(view="XCCL"))
    with pytest.raises(ValueError, match="UID"):
        build_mg_dataset(pixels, make_spec(sop_uid="1.2.abc"))


def test_writing_is_atomic_and_leaves_no_temporary_files(tmp_path):
    pixels = np.ones((16, 16), dtype=np.uint16)
    target = tmp_path / "out" / "image.dcm"
    write_mg_instance(target, pixels, make_spec())
    write_mg_instance(target, pixels * 2, make_spec())  # replaced in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["image.dcm"]
    assert int(pydicom.dcmread(target).pixel_array.max()) == 2
