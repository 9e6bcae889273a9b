"""OHIF's prebuilt viewer (npm ``@ohif/app``'s ``dist/``) served on loopback against an Orthanc's DICOMweb.

``install_ohif()`` unpacks the pinned release into ``tests/peers/ohif/dist`` (``npm pack``, then the tarball's
``package/dist``; ``make ohif`` does the same). ``OhifServer`` serves it with the standard library: unknown paths
answer ``index.html`` (OHIF routes such as ``/viewer?StudyInstanceUIDs=...``), ``/app-config.js`` is ours (one
DICOMweb data source, the same origin's ``/dicom-web``), and ``/dicom-web/*`` is proxied to Orthanc, so the browser
sees one origin and needs no CORS.
"""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OHIF_VERSION = "3.13.2"
OHIF_DIR = Path(__file__).resolve().parent / "ohif"
DIST = OHIF_DIR / "dist"

APP_CONFIG = """window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  showErrorDetails: 'always',
  defaultDataSourceName: 'dicomweb',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'dicomweb',
    configuration: {
      friendlyName: 'Orthanc', name: 'orthanc',
      wadoUriRoot: '%(root)s', qidoRoot: '%(root)s', wadoRoot: '%(root)s',
      qidoSupportsIncludeField: false, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true, staticWado: false,
      singlepart: 'bulkdata,video', bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


def install_ohif() -> Path:
    """``tests/peers/ohif/dist`` holding OHIF ``OHIF_VERSION``'s prebuilt viewer (fetched with ``npm pack``)."""
    if (DIST / "index.html").is_file():
        return DIST
    if shutil.which("npm") is None:
        raise FileNotFoundError("npm is not on the PATH: apt-get install nodejs npm (make system-deps)")
    OHIF_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OHIF_DIR) as tmp:
        done = subprocess.run(["npm", "pack", f"@ohif/app@{OHIF_VERSION}", "--pack-destination", tmp,
                               "--loglevel=error"], capture_output=True, text=True, timeout=600, check=True)
        tarball = Path(tmp) / done.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith("package/dist/")]
            archive.extractall(tmp, members=members, filter="data")
        shutil.rmtree(DIST, ignore_errors=True)
        (Path(tmp) / "package" / "dist").rename(DIST)
    return DIST


class OhifServer:
    """OHIF on ``http://127.0.0.1:<port>/`` over the DICOMweb root ``orthanc_url`` + ``/dicom-web``."""

    def __init__(self, orthanc_url: str, dist: Path = DIST) -> None:
        self.orthanc_url = orthanc_url.rstrip("/")
        self.dist = Path(dist)
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "OhifServer":
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.dist), **kwargs)

            def log_message(self, *args) -> None:  # the test's output is not an access log
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith("/dicom-web/"):
                    return self._proxy()
                if path == "/app-config.js":
                    return self._send(200, "application/javascript",
                                      (APP_CONFIG % {"root": server.url + "/dicom-web"}).encode())
                if not (server.dist / path.lstrip("/")).is_file():
                    self.path = "/index.html"
                return super().do_GET()

            def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _proxy(self) -> None:
                request = urllib.request.Request(server.orthanc_url + self.path, headers={
                    k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")})
                try:
                    with urllib.request.urlopen(request, timeout=120) as answer:
                        body, status, headers = answer.read(), answer.status, answer.headers
                except urllib.error.HTTPError as exc:
                    body, status, headers = exc.read(), exc.code, exc.headers
                self._send(status, headers.get("Content-Type", "application/octet-stream"), body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="ohif-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "OhifServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
