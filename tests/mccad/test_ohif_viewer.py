"""Radiologists see our findings in their own viewer: a study goes Orthanc -> mccad -> Orthanc (read back over
Orthanc's REST API, analysed by the shipped model, its objects stored back), and OHIF 3 (its prebuilt viewer,
served on loopback over Orthanc's DICOMweb) opened in headless Chromium draws the lesions of our TID 1500 SR on
their image with their labels; once tracked, the measurements panel lists every lesion with its label. Then, in
the same browser, OHIF opens the heatmap SEG of that image: the segmentation panel lists its activation bands, and
the screenshot is coloured where the map is hot and grey where it is cold. The screenshots land in the test's
folder, or at the paths ``OHIF_SCREENSHOT`` and ``OHIF_SEG_SCREENSHOT`` name (how the README's picture was made)."""
from __future__ import annotations

import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from dicom_io.reader import read_mammogram
from dicom_io.result_reader import HeatmapSegmentation, read_heatmap_segmentation
from settings.config import default_model_dir
from models.pipeline import Pipeline
from tests.peers.ohif_viewer import OhifServer, install_ohif
from tests.peers.orthanc import OrthancPeer
from training.simulate.synth import write_synthetic_dataset
from worker.outputs import write_study_outputs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _page_text(driver) -> str:
    """Everything the page shows, the SVG texts Cornerstone draws annotation labels with included."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('svg text')).map(e => e.textContent).join('\\n')"
        " + '\\n' + document.body.innerText")


#: what OHIF 3.13 logs when its viewer route failed (a render error, such as an image OHIF cannot window)
VIEWER_ROUTE_FAILED = "Route viewer Error Boundary"


def _wait_for(driver, texts: set[str], timeout_s: float, logs: list[str]) -> set[str]:
    """The ``texts`` still missing from the page after waiting up to ``timeout_s`` for all of them, or as soon as
    OHIF logs that its viewer route failed (nothing more will be drawn; waiting on would only spend the timeout).
    The browser's log lines read meanwhile are appended to ``logs``."""
    deadline = time.monotonic() + timeout_s
    first = len(logs)
    while True:
        missing = {t for t in texts if t not in _page_text(driver)}
        logs.extend(entry["message"] for entry in driver.get_log("browser"))
        failed = any(VIEWER_ROUTE_FAILED in m for m in logs[first:])
        if not missing or failed or time.monotonic() > deadline:
            return missing
        time.sleep(1)


def _click_button(driver, label: str) -> bool:
    return driver.execute_script(
        "const b = Array.from(document.querySelectorAll('button')).find(e => e.innerText.trim() === arguments[0]);"
        "if (b) { b.click(); return true; } return false;", label)


#: what OHIF 3.13 asks before it overlays a SEG opened as the initial series
SEG_PROMPT = "Do you want to open this Segmentation?"

#: page position (CSS pixels) of image pixels (column, row) in the first viewport, the image's SOP Instance UID, and
#: the device pixel ratio; through the Cornerstone3D OHIF exposes as ``window.cornerstone``
PAGE_POINTS_JS = """
const viewport = window.cornerstone.getEnabledElements()[0].viewport;
const imageId = viewport.getCurrentImageId();
const rect = viewport.canvas.getBoundingClientRect();
const points = arguments[0].map(([c, r]) => {
  const p = viewport.worldToCanvas(window.cornerstone.utilities.imageToWorldCoords(imageId, [c, r]));
  return [rect.left + p[0], rect.top + p[1]];
});
const general = window.cornerstone.metaData.get('generalImageModule', imageId) || {};
return {points: points, sop: general.sopInstanceUID, ratio: window.devicePixelRatio};
"""


def _windowed_points(mask: np.ndarray, radius: int, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` (column, row) pixels, spread over the image, whose whole (2 radius + 1)^2 window is in
    ``mask``."""
    padded = np.pad(mask.astype(np.int32), radius + 1)
    sums = padded.cumsum(0).cumsum(1)
    size = 2 * radius + 1
    window = sums[size:, size:] - sums[:-size, size:] - sums[size:, :-size] + sums[:-size, :-size]
    rows, cols = np.nonzero(window[:mask.shape[0], :mask.shape[1]] == size * size)
    pick = np.linspace(0, len(rows) - 1, min(count, len(rows))).astype(int) if len(rows) else []
    return [(int(cols[i]), int(rows[i])) for i in pick]


def _seg_colours_on_screen(driver, segs: dict[str, HeatmapSegmentation]) -> tuple[str, list, list]:
    """The SOP Instance UID of the image in the viewport, and the screenshot's RGB at image pixels inside the bands
    of that image's SEG (``segs`` maps source SOP Instance UID -> SEG) and at pixels outside every band, each chosen
    with a margin of 3 screen pixels around it in which every pixel is in a band, or in none."""
    shown = driver.execute_script(PAGE_POINTS_JS, [])["sop"]
    if shown not in segs:
        return shown, [], []
    bands = segs[shown].bands
    rows, cols = bands.shape
    corners = driver.execute_script(PAGE_POINTS_JS, [[0, 0], [cols - 1, 0]])["points"]
    scale = abs(corners[1][0] - corners[0][0]) / (cols - 1)  # CSS pixels per image pixel
    radius = int(np.ceil(3 / max(scale, 1e-3)))
    hot = _windowed_points(bands > 0, radius, 5)
    cold = _windowed_points(bands == 0, radius, 5)
    placed = driver.execute_script(PAGE_POINTS_JS, [list(p) for p in hot + cold])
    shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(int)
    ratio = placed["ratio"] or 1
    rgb = [shot[int(y * ratio), int(x * ratio)].tolist() for x, y in placed["points"]]
    return shown, rgb[:len(hot)], rgb[len(hot):]


def _is_seg_colour(rgb: list[int]) -> bool:
    """Yellow, orange or red over the grey image (our bands' display colours), not grey."""
    return rgb[0] - rgb[2] > 60


def _is_grey(rgb: list[int]) -> bool:
    return max(rgb) - min(rgb) < 30


def _through_orthanc_and_mccad(orthanc: OrthancPeer, files: list[Path], tmp_path: Path):
    """The study of ``files`` stored in Orthanc, read back over its REST API, analysed by the shipped model with its
    explanation, and mccad's objects stored back: (analysis, outputs)."""
    for path in files:
        orthanc.upload(path)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for item in orthanc.instances():
        (fetched / f"{item['ID']}.dcm").write_bytes(orthanc.instance_file(item["ID"]))
    images = [read_mammogram(p) for p in sorted(fetched.glob("*.dcm"))]
    pipeline = Pipeline.from_model_dir(default_model_dir(), device="cpu", explain=True)
    analysis = pipeline.analyze(images)
    outputs = write_study_outputs(analysis, images, tmp_path / "result")
    for path in outputs.dicom_objects:
        orthanc.upload(path)
    return analysis, outputs


def _heatmap_segs(paths: list[Path], result) -> tuple[str, dict[str, HeatmapSegmentation]]:
    """The SEG series of the study and its SEGs by source SOP Instance UID (one per image of ``result``)."""
    seg_files = [pydicom.dcmread(p) for p in paths if p.name.startswith("seg-heatmap")]
    segs = {s.source_sop_instance_uid: s for s in map(read_heatmap_segmentation, seg_files)}
    assert set(segs) == {image.sop_instance_uid for image in result.images}, "one SEG per image"
    return seg_files[0].SeriesInstanceUID, segs  # one series holds the SEG of every image of the study


@dataclass
class SegOnScreen:
    """What OHIF showed of a SEG series: whether its prompt was accepted, the band labels missing from the page,
    the SOP Instance UID of the image in the viewport, and screen colours inside and outside that image's bands."""

    accepted: bool
    missing_labels: set[str]
    shown_sop: str
    hot_rgb: list
    cold_rgb: list


def _open_seg(driver, url: str, study_uid: str, seg_series: str, segs: dict[str, HeatmapSegmentation],
              logs: list[str], screenshot: Path) -> SegOnScreen:
    """Open the SEG series as the viewer's initial series, accept OHIF's prompt, open the segmentation panel, wait
    for every band label, read the colours on screen and save a screenshot; the browser's log goes to ``logs``."""
    labels = {label for s in segs.values() for label in s.segment_labels.values()}
    driver.get(f"{url}/viewer?StudyInstanceUIDs={study_uid}&initialSeriesInstanceUID={seg_series}")
    _wait_for(driver, {SEG_PROMPT}, 60, logs)
    accepted = _click_button(driver, "Yes")
    driver.execute_script("document.querySelector('[data-cy=panelSegmentation-btn]')?.click()")
    missing = _wait_for(driver, labels, 60, logs)
    for button in ("Skip all", "Confirm and hide"):
        _click_button(driver, button)
    time.sleep(2)
    # a viewer that failed has no viewport to look at: the missing labels and the logged errors say so
    shown_sop, hot_rgb, cold_rgb = _seg_colours_on_screen(driver, segs) if not missing else ("", [], [])
    driver.save_screenshot(str(screenshot))
    logs.extend(entry["message"] for entry in driver.get_log("browser"))
    return SegOnScreen(accepted, missing, shown_sop, hot_rgb, cold_rgb)


def _assert_seg_shown(seg: SegOnScreen, segs: dict[str, HeatmapSegmentation], errors: list[str]) -> None:
    """The SEG loaded (its bands listed by label) on one of our images, coloured where that image's SEG is hot and
    grey where it is cold."""
    assert seg.accepted and not seg.missing_labels, (seg.missing_labels, errors)
    assert seg.shown_sop in segs, (seg.shown_sop, errors)
    assert seg.hot_rgb and seg.cold_rgb, "the map has a hot and a cold region wide enough to look at"
    assert all(_is_seg_colour(c) for c in seg.hot_rgb), seg.hot_rgb
    assert all(_is_grey(c) for c in seg.cold_rgb), seg.cold_rgb


@pytest.mark.slow
def test_ohif_draws_our_lesions_on_their_images(tmp_path):
    dist = install_ohif()
    synth = tmp_path / "synth"
    write_synthetic_dataset(synth, 1, seed=3)
    with OrthancPeer(tmp_path / "orthanc", dicomweb=True) as orthanc:
        analysis, outputs = _through_orthanc_and_mccad(orthanc, sorted(synth.rglob("*.dcm"))[:2], tmp_path)
        result = analysis.result
        lesions = [(image, lesion) for image in result.images for lesion in image.lesions]
        assert lesions, "the shipped model finds the synthetic clusters"
        sr = next(p for p in outputs.dicom_objects if p.name.startswith("sr-tid1500"))
        sr_series = pydicom.dcmread(sr, stop_before_pixels=True).SeriesInstanceUID
        seg_series, segs = _heatmap_segs(outputs.dicom_objects, result)

        with OhifServer(orthanc.url, dist) as server:
            driver = _browser()
            logs: list[str] = []
            try:
                labels = {f"#{lesion.lesion_id} {lesion.caption()}" for _, lesion in lesions}
                first_image = lesions[0][0].sop_instance_uid
                shown = {f"#{les.lesion_id} {les.caption()}"
                         for im, les in lesions if im.sop_instance_uid == first_image}
                # the SR viewport draws the boxes of the first referenced image, each with its label, on the first
                # load (a failed one, its viewer route's error boundary logged, fails the test with OHIF's errors)
                driver.get(f"{server.url}/viewer?StudyInstanceUIDs={result.study_instance_uid}"
                           f"&initialSeriesInstanceUID={sr_series}")
                missing_in_viewport = _wait_for(driver, shown, 90, logs)
                if missing_in_viewport:
                    driver.save_screenshot(str(tmp_path / "sr-viewport.png"))
                # tracking the SR's measurements lists every lesion, with its label, in the measurements panel
                tracked = _click_button(driver, "Yes")
                time.sleep(2)
                driver.execute_script("document.querySelector('[data-cy=trackedMeasurements-btn]').click()")
                missing_in_panel = _wait_for(driver, labels, 30, logs)
                for button in ("Skip all", "Confirm and hide"):  # the first-visit tour and banner, for the picture
                    _click_button(driver, button)
                time.sleep(1)
                screenshot = Path(os.environ.get("OHIF_SCREENSHOT") or tmp_path / "ohif.png")
                driver.save_screenshot(str(screenshot))
                logs.extend(entry["message"] for entry in driver.get_log("browser"))
                # the heatmap SEG series, opened in the same browser: OHIF asks, then overlays a SEG on its image
                seg = _open_seg(driver, server.url, result.study_instance_uid, seg_series, segs, logs,
                                Path(os.environ.get("OHIF_SEG_SCREENSHOT") or tmp_path / "ohif-seg.png"))
            finally:
                driver.quit()
        errors = [m for m in logs if "rror" in m][-10:]
        assert not missing_in_viewport, (missing_in_viewport, errors)
        assert tracked and not missing_in_panel, (missing_in_panel, errors)
        # the SEG loaded (its bands listed by label) on one of our images, coloured where that image's SEG is hot
        # and grey where it is cold
        _assert_seg_shown(seg, segs, errors)


@pytest.mark.slow
def test_ohif_shows_the_heatmap_of_a_mammogram_that_states_no_pixel_spacing(tmp_path):
    """Digitised film often states neither Pixel Spacing nor Imager Pixel Spacing; OHIF's viewer fails on a SEG
    without Pixel Measures, so the SEG of such an image carries the nominal spacing viewers take for it, and OHIF
    overlays it on the image like any other."""
    dist = install_ohif()
    synth = tmp_path / "synth"
    write_synthetic_dataset(synth, 1, seed=3)
    files = sorted(synth.rglob("*.dcm"))[:1]
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword in ("PixelSpacing", "ImagerPixelSpacing", "PixelSpacingCalculationType",
                        "PixelSpacingCalculationDescription", "EstimatedRadiographicMagnificationFactor"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
    with OrthancPeer(tmp_path / "orthanc", dicomweb=True) as orthanc:
        analysis, outputs = _through_orthanc_and_mccad(orthanc, files, tmp_path)
        seg_series, segs = _heatmap_segs(outputs.dicom_objects, analysis.result)
        with OhifServer(orthanc.url, dist) as server:
            driver = _browser()
            logs: list[str] = []
            try:
                seg = _open_seg(driver, server.url, analysis.result.study_instance_uid, seg_series, segs, logs,
                                tmp_path / "ohif-seg-no-spacing.png")
            finally:
                driver.quit()
    _assert_seg_shown(seg, segs, [m for m in logs if "rror" in m][-10:])
