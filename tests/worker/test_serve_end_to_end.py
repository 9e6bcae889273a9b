"""`mccad serve` end to end in embedded mode: Orthanc (the PACS) sends a 4-view study over C-STORE, `mccad serve`
is killed right after the acknowledgements, restarts, recovers, and our result objects appear in Orthanc; dcmtk's
storescu is a second sender, the embedded worker is killed in the middle of its study and replaced; SIGTERM shuts
the service down cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dicom_io.spool import Spool
from settings.config import Destination
from tests.peers.dcmtk import dcmtk
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port
from tests.worker.conftest import make_settings
from tests.worker.studies import wait_for_state, write_study
from worker.ledger import ANALYSING, DONE, Ledger
from worker.service import settings_env


class ServeProcess:
    def __init__(self, settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.proc = subprocess.Popen([sys.executable, "-m", "mccad", "serve", "--shutdown-grace", "60"],
                                     env=settings_env(settings), stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.settings.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def wait_healthy(self, timeout_s: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                status, body = self.get("/healthz")
                if status == 200:
                    return json.loads(body)
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.3)
        raise TimeoutError("mccad serve not healthy: " + self.log.read_text()[-4000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def _results_in(pacs: OrthancPeer, study_uid: str) -> list[dict]:
    return [i for i in pacs.find_instances(StudyInstanceUID=study_uid) if i["MainDicomTags"].get("SOPInstanceUID")
            and pacs.rest("GET", f"/instances/{i['ID']}/content/0008,0060").strip() in (b"SR", b"SEG", b"PR")]


@pytest.mark.slow
def test_pacs_study_survives_a_killed_service_and_results_reach_the_pacs(tmp_path, tiny_model_dir):
    scp_port = free_port()
    pacs = OrthancPeer(tmp_path / "pacs", modalities={"cad": ("MCCAD", "127.0.0.1", scp_port)}).start()
    serve = None
    try:
        settings = make_settings(tmp_path, port=scp_port, http_port=free_port(), study_idle_s=2.0,
                                 model_dir=tiny_model_dir, allowed_calling_aes=["ORTHANC", "STORESCU"],
                                 log_stderr=False, detector_runtime="auto",  # the product's default runtime
                                 destinations=[Destination(ae_title="ORTHANC", host="127.0.0.1",
                                                           port=pacs.dicom_port)])
        study = write_study(tmp_path / "in", "e2e-four-views", views=4)
        parents = {pacs.upload(path)["ParentStudy"] for path in study.paths}
        log = tmp_path / "serve.log"

        serve = ServeProcess(settings, log)
        assert serve.wait_healthy()["checks"] == {"scp": True, "broker": True, "ledger": True, "worker": True}
        pacs.send_to("cad", sorted(parents))  # synchronous: returns once our SCP acknowledged all 4
        serve.kill()  # right after the acknowledgements, before the study went idle
        spool = Spool(settings.spool_dir)
        assert len(spool.instances(study.study_uid)) == 4, "acknowledged means on disk"

        serve = ServeProcess(settings, log)
        serve.wait_healthy()
        ledger = Ledger(settings.effective_ledger_url)
        record = wait_for_state(ledger, study.study_uid, {DONE}, timeout_s=400)  # done = delivered everywhere
        assert record.instance_count == 4
        found = _results_in(pacs, study.study_uid)
        work = json.loads((settings.results_dir / study.study_uid / "work.json").read_text())
        assert len(found) == len(work["dicom_objects"])

        second = write_study(tmp_path / "in", "e2e-storescu", views=1, seed=2)
        sent = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "MCCAD", "127.0.0.1", str(scp_port),
                               str(second.paths[0])], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        # the embedded worker dies in the middle of this study: serve restarts it and the study is finished later
        wait_for_state(ledger, second.study_uid, {ANALYSING}, timeout_s=120, interval_s=0.05)
        children = Path(f"/proc/{serve.proc.pid}/task/{serve.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)
        record = wait_for_state(ledger, second.study_uid, {DONE}, timeout_s=300)
        assert (record.attempts, record.crashes) == (1, 1)  # the kill was our crash: no attempt spent
        assert _results_in(pacs, second.study_uid)

        status, metrics = serve.get("/metrics")
        assert status == 200
        assert "mccad_instances_received_total 1.0" in metrics.splitlines()
        assert 'mccad_studies{state="done"} 2.0' in metrics.splitlines()
        report = json.loads(subprocess.run([sys.executable, "-m", "mccad", "status", "--json"],
                                           env=settings_env(settings), capture_output=True, text=True,
                                           timeout=60, check=True).stdout)
        assert report["studies"]["done"] == 2 and report["instances"] == 5

        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(90) == 0
        # nothing acknowledged is lost: 5 instances sent, 5 on disk, 5 in the ledger
        on_disk = sum(len(spool.instances(uid)) for uid in spool.studies())
        assert on_disk == ledger.count_instances() == 5
        # the service's logs (serve's and its worker's) are in the file it named, and only there
        service_log = settings.data_dir / "logs" / "mccad.log"
        said = log.read_text()
        assert f"mccad serve: logging to {service_log}" in said and f"mccad worker: logging to {service_log}" in said
        events = service_log.read_text()
        assert all(event in events for event in ("mccad serve ready", "instance stored", "study finished"))
        assert "study finished" not in said
        assert "Test^Synthetic" not in events + said, "no patient names in logs"
    finally:
        if serve is not None:
            serve.kill()
        pacs.stop()
