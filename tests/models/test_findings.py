"""One truth per finding: over random detector outputs, every level's label follows its P(malignant), and every
writer (result.json, the TID 1500 SR, the Mammography CAD SR, the GSPS captions, the HTML page, Cornerstone's label
text) says the same label with the same probability."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_io.cad_sr import build_cad_report
from dicom_io.pr import build_presentation_state
from dicom_io.result_reader import read_cad_report, read_measurement_report, read_presentation_state
from dicom_io.sr import build_measurement_report, lesion_comment
from models.findings import breast_results, exam_result, image_decision, lesion_finding, lesions_of_image
from models.results import (DECISION_THRESHOLD, NOT_FOR_CLINICAL_USE, BoxXYXY, ImageResult, LesionResult,
                            StudyResult, decide)
from tests.dicom_io.result_fixtures import COLUMNS, ROWS, header_only, make_source
from worker.outputs import StudyOutputs, render_html

CAPTION = re.compile(r"(benign|malignant), P\(cancer\) (\d\.\d\d)")

probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
boxes = st.tuples(st.floats(0, COLUMNS - 2), st.floats(0, ROWS - 2), st.floats(1, 60), st.floats(1, 60)).map(
    lambda b: (b[0], b[1], min(b[0] + b[2], COLUMNS), min(b[1] + b[3], ROWS)))
detector_box = st.tuples(boxes, st.sampled_from([1, 2]), probabilities)
image_output = st.tuples(st.sampled_from(["L", "R", None]), st.sampled_from(["CC", "MLO", None]),
                         st.lists(detector_box, max_size=4), st.booleans(), st.lists(probabilities, min_size=4,
                                                                                       max_size=4))
study_output = st.lists(image_output, min_size=1, max_size=4)


def _study(outputs) -> tuple[StudyResult, dict]:
    """What the pipeline reports for these detector outputs (the same functions, in the same order)."""
    images, sources, first = [], {}, 1
    for n, (laterality, view, dets, lesion_mode, splits) in enumerate(outputs, start=1):
        source = make_source(n, laterality, view or "CC", with_pixels=False)
        sources[source.SOPInstanceUID] = header_only(source)
        lesions = lesions_of_image(first, np.array([d[0] for d in dets]).reshape(-1, 4), [d[1] for d in dets],
                                   [d[2] for d in dets], splits[:len(dets)] if lesion_mode else None,
                                   {"er": [0.3] * len(dets)})
        first += len(lesions)
        verdict = image_decision(lesions)
        images.append(ImageResult(
            sop_instance_uid=source.SOPInstanceUID, sop_class_uid=source.SOPClassUID,
            series_instance_uid=source.SeriesInstanceUID, study_instance_uid=source.StudyInstanceUID,
            laterality=laterality, view=view, rows=ROWS, columns=COLUMNS, lesions=lesions, label=verdict.label,
            malignancy_probability=verdict.malignancy_probability, probability=verdict.probability))
    breasts = breast_results(images)
    result = StudyResult(study_instance_uid=images[0].study_instance_uid, images=images, breasts=breasts,
                         exam=exam_result(breasts), models=[], warnings=[NOT_FOR_CLINICAL_USE])
    return result, sources


def _agrees(text: str, label: str, p: float) -> None:
    """A caption says ``label`` with a P(cancer) on the side of the threshold the label means."""
    found = CAPTION.search(text)
    assert found is not None, text
    assert found.group(1) == label
    shown = float(found.group(2))
    assert (shown >= DECISION_THRESHOLD) if label == "malignant" else (shown <= DECISION_THRESHOLD)
    assert shown == pytest.approx(p, abs=0.005 + 1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(study_output)
def test_no_output_disagrees_with_itself(outputs):
    result, sources = _study(outputs)
    findings = [*(lesion for image in result.images for lesion in image.lesions), *result.images, *result.breasts,
                result.exam]
    for finding in findings:
        assert (finding.label, finding.probability) == decide(finding.malignancy_probability)[::2]
    for image in result.images:
        assert image.malignancy_probability == max((les.malignancy_probability for les in image.lesions), default=0.0)
    assert result.exam.malignancy_probability == max(b.malignancy_probability for b in result.breasts)

    # result.json and the TID 1500 SR give the same result back
    assert StudyResult.model_validate_json(result.model_dump_json()) == result
    sr = build_measurement_report(result, sources)
    assert read_measurement_report(sr) == result
    # the Mammography CAD SR: one finding per lesion with that lesion's P(cancer)
    cad = read_cad_report(build_cad_report(result, sources))
    lesions = [lesion for image in result.images for lesion in image.lesions]
    assert [f.probability_of_cancer_percent for f in cad.findings] == pytest.approx(
        [les.malignancy_probability * 100 for les in lesions])
    # GSPS captions and the label viewers show (Cornerstone / OHIF read the SR's Comment)
    for image in result.images:
        header = sources[image.sop_instance_uid]
        state = read_presentation_state(build_presentation_state(result, image, header))
        assert len(state.boxes) == len(image.lesions)
        for box, lesion in zip(sorted(state.boxes, key=lambda b: b.caption), sorted(
                image.lesions, key=lambda les: f"#{les.lesion_id} {les.caption()}"), strict=True):
            _agrees(box.caption, lesion.label, lesion.malignancy_probability)
        for lesion in image.lesions:
            _agrees(lesion_comment(lesion), lesion.label, lesion.malignancy_probability)
    # the HTML page
    page = render_html(result, StudyOutputs(out_dir=Path("."), result_json=Path("result.json")))
    _agrees(page.split("Exam:", 1)[1], result.exam.label, result.exam.malignancy_probability)
    for lesion in lesions:
        _agrees(page.split(f"#{lesion.lesion_id} ", 1)[1], lesion.label, lesion.malignancy_probability)


def test_a_benign_box_with_a_high_reading_of_malignancy_is_not_called_benign():
    """Class scores: a benign box scoring 0.36 reads as P(malignant) 0.64, so the lesion is malignant."""
    lesion = lesion_finding(1, (0, 0, 10, 10), "benign", 0.36)
    assert (lesion.label, lesion.malignancy_probability, lesion.score) == ("malignant", pytest.approx(0.64), 0.36)
    weak = lesion_finding(2, (0, 0, 10, 10), "malignant", 0.43)
    assert (weak.label, weak.malignancy_probability, weak.probability) == ("benign", 0.43, pytest.approx(0.57))
    assert weak.invasive_incl_microinvasion_probability is None  # patch heads report on malignant lesions only


def test_an_inconsistent_finding_is_refused():
    with pytest.raises(ValueError, match="means malignant"):
        LesionResult(lesion_id=1, box=BoxXYXY(x0=0, y0=0, x1=1, y1=1), label="benign", probability=0.36,
                     malignancy_probability=0.64, score=0.36)
    with pytest.raises(ValueError, match="NaN"):
        decide(float("nan"))
    assert decide(DECISION_THRESHOLD).label == "benign" and decide(np.nextafter(0.5, 1)).label == "malignant"
