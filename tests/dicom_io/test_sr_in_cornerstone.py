"""Our TID 1500 SR as OHIF reads it: Cornerstone3D's SR adapter (Node, the npm packages OHIF 3 ships) hydrates one
RectangleROI per lesion, on the image the lesion was found on, labelled with the lesion's label and P(cancer)."""
from __future__ import annotations

import numpy as np
import pytest

from dicom_io.outputs import write_result_objects
from dicom_io.sr import CORNERSTONE_RECTANGLE
from tests.dicom_io.result_fixtures import header_only, make_result, make_source
from tests.peers.node_readers import cornerstone_annotations


@pytest.mark.slow
def test_cornerstone_hydrates_one_rectangle_per_lesion_on_its_image(tmp_path):
    sources = [make_source(1, "L", "CC"), make_source(2, "R", "MLO"), make_source(3, "L", "MLO")]
    result = make_result(sources, descriptors=True)  # lesion groups with descriptor CODE items, as a head gives
    moved = result.images[2].model_copy(update={"lesions": [result.images[0].lesions[1].model_copy(
        update={"lesion_id": 3})]})
    result = result.model_copy(update={"images": [result.images[0], result.images[1], moved]})
    objects = write_result_objects(result, {s.SOPInstanceUID: header_only(s) for s in sources}, {}, tmp_path)
    (sr,) = [o for o in objects if o.kind == "sr-tid1500"]

    annotations = cornerstone_annotations(sr.path)

    lesions = [(image, lesion) for image in result.images for lesion in image.lesions]
    assert len(annotations) == len(lesions) == 3
    assert {a["tool"] for a in annotations} == {CORNERSTONE_RECTANGLE.rsplit(":", 1)[1]}
    assert len({a["trackingUid"] for a in annotations}) == 3
    for annotation, (image, lesion) in zip(annotations, lesions, strict=True):
        assert annotation["sopInstanceUid"] == image.sop_instance_uid
        assert annotation["label"] == f"#{lesion.lesion_id} {lesion.caption()}"
        assert annotation["description"] == "Calcification Cluster"
        points = np.asarray(annotation["points"])
        x0, y0, x1, y1 = lesion.box.as_tuple()
        np.testing.assert_allclose(points.min(axis=0), [x0, y0], atol=1e-4)
        np.testing.assert_allclose(points.max(axis=0), [x1, y1], atol=1e-4)
