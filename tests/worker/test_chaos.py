"""Chaos: a stream of small synthetic studies while the SCP (``mccad serve``), the worker (``mccad worker``), Redis
(with the runbook's persistence) and the destination Orthanc are killed (SIGKILL) and restarted at random moments.
At the end every acknowledged study is delivered exactly once (each result object once in the PACS) and nothing
is left stuck. The faults go on until every study is acknowledged, each component has been killed and at least
``MIN_FAULTS`` have struck, for at most ``CHAOS_MAX_S``: the test lasts as long as the stream, not a fixed time. The
seeds are fixed so that a failure repeats."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from settings.config import Destination
from tests.peers.dcmtk import dcmtk
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port, wait_for_port
from tests.peers.redis_server import start_redis
from tests.worker.conftest import make_settings
from tests.worker.studies import write_study
from worker.ledger import DONE, Ledger
from worker.service import settings_env
from worker.supervisor import stuck_studies

SEED = 23
STUDIES = 6
MIN_FAULTS = 6
CHAOS_MAX_S = 75.0


class Component:
    """A process the chaos thread may kill and restart."""

    def __init__(self, name: str, start) -> None:
        self.name, self._start = name, start
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.proc = self._start()

    def kill(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(30)

    def stop(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)


def _components(settings, logs: Path, redis_port: int, redis_dir: Path, pacs: OrthancPeer) -> list[Component]:
    """Redis (append-only, as the runbook sets it), the destination Orthanc, ``mccad serve`` and ``mccad worker``,
    each logging into ``logs``."""
    env = settings_env(settings)

    def redis_start() -> subprocess.Popen:
        return start_redis(redis_port, redis_dir, logs / "redis.log", fsync="everysec")

    def serve_start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "mccad", "serve"], env=env,
                                stdout=(logs / "serve.log").open("ab"), stderr=subprocess.STDOUT)
        wait_for_port(settings.port, 120)
        return proc

    def worker_start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-P", "-m", "mccad", "worker", "--pool", "solo"], env=env,
                                stdout=(logs / "worker.log").open("ab"), stderr=subprocess.STDOUT)

    def orthanc_start() -> subprocess.Popen:
        pacs.start()
        return pacs.process

    return [Component("redis", redis_start), Component("orthanc", orthanc_start),
            Component("scp", serve_start), Component("worker", worker_start)]


def _send_like_a_pacs(studies: list, port: int, stop: threading.Event, acknowledged: list[str],
                      all_sent: threading.Event) -> None:
    """Each study until storescu says every instance was acknowledged (a PACS resends what was not), at random
    pauses drawn from ``SEED``."""
    rng = random.Random(SEED)
    for study in studies:
        while not stop.is_set():
            sent = subprocess.run([dcmtk("storescu"), "-aet", "PACS1", "-aec", "MCCAD", "127.0.0.1",
                                   str(port), *map(str, study.paths)],
                                  capture_output=True, text=True, timeout=120)
            if sent.returncode == 0 and "Status" not in sent.stderr:
                acknowledged.append(study.study_uid)
                break
            time.sleep(1.0)
        time.sleep(rng.uniform(2.0, 6.0))
    all_sent.set()


def _enough_chaos(components: list[Component], faults: list[str], all_sent: threading.Event) -> bool:
    return all_sent.is_set() and len(faults) >= MIN_FAULTS and {c.name for c in components} <= set(faults)


def _chaos(components: list[Component], faults: list[str], stop: threading.Event, all_sent: threading.Event) -> None:
    """Kill a random component and start it again, at random pauses drawn from ``SEED + 1``, until there was enough
    chaos or ``CHAOS_MAX_S`` has passed."""
    victims = random.Random(SEED + 1)
    end = time.monotonic() + CHAOS_MAX_S
    while time.monotonic() < end and not stop.is_set() and not _enough_chaos(components, faults, all_sent):
        time.sleep(victims.uniform(3.0, 9.0))
        victim = victims.choice(components)
        victim.kill()
        time.sleep(victims.uniform(0.5, 3.0))
        victim.start()
        faults.append(victim.name)


def _records_when_done(ledger: Ledger, uids: list[str], timeout_s: float) -> dict:
    """The ledger's record of each study once all are done, or as they stand after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = {uid: ledger.get(uid) for uid in uids}
        if all(r is not None and r.state == DONE for r in records.values()) or time.monotonic() >= deadline:
            return records
        time.sleep(1.0)


def _assert_each_result_once_in_pacs(settings, pacs: OrthancPeer, uids: list[str]) -> None:
    for uid in uids:
        work = json.loads((settings.results_dir / uid / "work.json").read_text())
        ours = {dcmread_uid(settings.results_dir / uid / name) for name in work["dicom_objects"]}
        in_pacs = [i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.find_instances(StudyInstanceUID=uid)]
        results = [sop for sop in in_pacs if sop in ours]
        assert sorted(results) == sorted(ours), f"study {uid[-12:]}: each result exactly once in the PACS"


@pytest.mark.slow
def test_acknowledged_studies_are_delivered_exactly_once_through_random_faults(tmp_path, tiny_model_dir):
    redis_port, redis_dir = free_port(), tmp_path / "redis"
    redis_dir.mkdir()
    pacs = OrthancPeer(tmp_path / "pacs")
    settings = make_settings(
        tmp_path, broker_url=f"redis://127.0.0.1:{redis_port}/0", model_dir=tiny_model_dir, port=free_port(),
        http_port=free_port(), study_idle_s=1.0, retry_backoff_s=0.5, retry_backoff_max_s=2.0,
        supervise_interval_s=1.0, worker_stale_s=5.0, send_retries=0, max_crashes=50,
        destinations=[Destination(ae_title="ORTHANC", host="127.0.0.1", port=pacs.dicom_port)])
    logs = tmp_path / "logs"
    logs.mkdir()
    components = _components(settings, logs, redis_port, redis_dir, pacs)
    for component in components:
        component.start()
    studies = [write_study(tmp_path / "in", f"chaos-{i}", views=1, seed=i) for i in range(STUDIES)]
    acknowledged: list[str] = []
    faults: list[str] = []
    stop, all_sent = threading.Event(), threading.Event()
    sender = threading.Thread(target=_send_like_a_pacs, args=(studies, settings.port, stop, acknowledged, all_sent))
    chaos_thread = threading.Thread(target=_chaos, args=(components, faults, stop, all_sent))
    ledger = Ledger(settings.effective_ledger_url)
    try:
        sender.start()
        chaos_thread.start()
        chaos_thread.join(CHAOS_MAX_S + 120)
        sender.join(600)
        assert len(acknowledged) == STUDIES, f"sender stopped with {acknowledged}"
        records = _records_when_done(ledger, acknowledged, 420)
        states = {uid[-12:]: (r.state, r.reason) if r else None for uid, r in records.items()}
        assert all(r is not None and r.state == DONE for r in records.values()), \
            f"faults {faults}; states {states}; " + (logs / "worker.log").read_text()[-3000:]
        _assert_each_result_once_in_pacs(settings, pacs, acknowledged)
        assert stuck_studies(ledger, settings.model_copy(update={"stuck_after_s": 1.0})) == []
        print(f"chaos: {len(faults)} faults survived: {faults}")
        assert len(faults) >= MIN_FAULTS and {c.name for c in components} <= set(faults)
    finally:
        stop.set()
        for component in reversed(components):
            component.stop()


def dcmread_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
