"""Orthanc (Debian package) as a real PACS for tests.

Started with its own configuration, storage and index folders on free loopback ports; stopped by ``stop()``.
``modalities`` maps a name to (AE title, host, port) of peers Orthanc may send to (for example our SCP);
``popen_kwargs`` go to ``subprocess.Popen`` (the benchmarks start it in its own process group, to die with them);
``dicomweb`` loads Debian's orthanc-dicomweb plugin (``/dicom-web/``, for viewers such as OHIF).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.peers.ports import free_port, wait_for_port

ORTHANC_BIN = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancPeer:
    def __init__(self, workdir: Path, aet: str = "ORTHANC", modalities: dict[str, tuple[str, str, int]] | None = None,
                 overwrite_instances: bool = True, popen_kwargs: dict[str, Any] | None = None,
                 dicomweb: bool = False) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = dict(modalities or {})
        self.overwrite_instances = overwrite_instances
        self.popen_kwargs = dict(popen_kwargs or {})
        self.dicomweb = dicomweb
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running Orthanc process (None before ``start()`` and after ``stop()``)."""
        return self._proc

    def start(self) -> "OrthancPeer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.dicomweb and not DICOMWEB_PLUGIN.is_file():
            raise FileNotFoundError(f"{DICOMWEB_PLUGIN} missing: apt-get install orthanc-dicomweb (make system-deps)")
        config = {
            "Name": "mccad-test-pacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomCheckCalledAet": False,
            "OverwriteInstances": self.overwrite_instances,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
            "HttpTimeout": 60,
            "DicomScuTimeout": 30,
            "StableAge": 1,
        }
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(config))
        with open(self.workdir / "orthanc.log", "wb") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen([ORTHANC_BIN, str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                          **self.popen_kwargs)
        try:
            wait_for_port(self.http_port, 30)
            wait_for_port(self.dicom_port, 30)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError("Orthanc did not start: " + (self.workdir / "orthanc.log").read_text()[-2000:]) from exc
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> "OrthancPeer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # REST helpers -----------------------------------------------------------------------------------------------
    def rest(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = None
        headers = {}
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
                headers["Content-Type"] = "application/dicom"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        ctype = resp.headers.get("Content-Type", "")
        return json.loads(raw) if "json" in ctype and raw else raw

    def upload(self, path: Path) -> dict[str, Any]:
        return self.rest("POST", "/instances", Path(path).read_bytes())

    def instances(self) -> list[dict[str, Any]]:
        return self.rest("GET", "/instances?expand")

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.rest("GET", f"/instances/{orthanc_id}/file")

    def find_instances(self, **query: str) -> list[dict[str, Any]]:
        return self.rest("POST", "/tools/find", {"Level": "Instance", "Query": query, "Expand": True})

    def send_to(self, modality: str, resources: list[str], timeout: float = 120.0) -> Any:
        return self.rest("POST", f"/modalities/{modality}/store", {"Resources": resources, "Synchronous": True},
                         timeout=timeout)

    def wait_for(self, predicate, timeout_s: float = 60.0, interval_s: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate(self)
            except urllib.error.URLError:
                last = None
            if last:
                return last
            time.sleep(interval_s)
        raise TimeoutError(f"Orthanc condition not met in {timeout_s} s (last: {last!r})")
