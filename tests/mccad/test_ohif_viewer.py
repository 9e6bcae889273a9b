"""Radiologists see our findings in their own viewer: a study goes Orthanc -> mccad -> Orthanc (read back over
Orthanc's REST API, analysed by the shipped model, its objects stored back), and OHIF 3 (its prebuilt viewer,
served on loopback over Orthanc's DICOMweb) opened in headless Chromium draws the lesions of our TID 1500 SR on
their image with their labels; once tracked, the measurements panel lists every lesion with its label. The
screenshot lands in the test's folder, or at the path ``OHIF_SCREENSHOT`` names (how the README's picture was
made)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pydicom
import pytest

from dicom_io.reader import read_mammogram
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


#: what OHIF 3.13 logs when its viewer route failed (the blank SR viewport of a failed first load, see the test)
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


@pytest.mark.slow
def test_ohif_draws_our_lesions_on_their_images(tmp_path):
    dist = install_ohif()
    synth = tmp_path / "synth"
    write_synthetic_dataset(synth, 1, seed=3)
    with OrthancPeer(tmp_path / "orthanc", dicomweb=True) as orthanc:
        for path in sorted(synth.rglob("*.dcm"))[:2]:
            orthanc.upload(path)
        # mccad reads what the PACS holds, analyses it and stores its objects back into the PACS
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
        result = analysis.result
        lesions = [(image, lesion) for image in result.images for lesion in image.lesions]
        assert lesions, "the shipped model finds the synthetic clusters"
        sr = next(p for p in outputs.dicom_objects if p.name.startswith("sr-tid1500"))
        sr_series = pydicom.dcmread(sr, stop_before_pixels=True).SeriesInstanceUID

        with OhifServer(orthanc.url, dist) as server:
            driver = _browser()
            logs: list[str] = []
            try:
                labels = {f"#{lesion.lesion_id} {lesion.caption()}" for _, lesion in lesions}
                first_image = lesions[0][0].sop_instance_uid
                shown = {f"#{les.lesion_id} {les.caption()}"
                         for im, les in lesions if im.sop_instance_uid == first_image}
                # the SR viewport draws the boxes of the first referenced image, each with its label; OHIF 3.13
                # sometimes leaves the SR viewport blank on a first load ("error in event listener of type:
                # IMAGE_LOAD_ERROR", then its viewer route's error boundary), which a reload, as a radiologist would
                # do, clears: the page is opened at most twice, again as soon as the error boundary is logged
                for attempt in range(2):
                    driver.get(f"{server.url}/viewer?StudyInstanceUIDs={result.study_instance_uid}"
                               f"&initialSeriesInstanceUID={sr_series}")
                    missing_in_viewport = _wait_for(driver, shown, 90, logs)
                    if not missing_in_viewport:
                        break
                    driver.save_screenshot(str(tmp_path / f"sr-viewport-{attempt + 1}.png"))
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
            finally:
                driver.quit()
        errors = [m for m in logs if "rror" in m][-10:]
        assert not missing_in_viewport, (missing_in_viewport, errors)
        assert tracked and not missing_in_panel, (missing_in_panel, errors)
