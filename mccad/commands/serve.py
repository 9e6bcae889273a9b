"""``mccad serve``: the PACS-facing service (Storage SCP, assembler, health), plus a worker in embedded mode."""
from __future__ import annotations

import argparse

from settings.logs import configure_service_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="receive studies over DICOM C-STORE and have them analysed (runs until SIGTERM)",
                       description="Runs the Storage SCP, the study assembler and /healthz + /metrics. Without "
                                   "MCCAD_BROKER_URL it also runs a worker in the same process tree (embedded mode); "
                                   "with a Redis broker start `mccad worker` on the GPU hosts.")
    p.add_argument("--port", type=int, default=None, help="override MCCAD_PORT (DICOM port)")
    p.add_argument("--shutdown-grace", type=float, default=120.0, metavar="SECONDS",
                   help="how long the embedded worker may take to finish its study on shutdown (default 120)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from dicom_io.scp import SCPConfigError
    from mccad.cli import UserError
    from worker.ledger import LedgerError
    from worker.service import Service

    if args.port is not None:
        settings = settings.model_copy(update={"port": args.port})
    configure_service_logging(settings, "serve", args.log_level)
    try:
        return Service(settings, shutdown_grace_s=args.shutdown_grace).run()
    except (SCPConfigError, LedgerError) as exc:
        raise UserError(str(exc)) from exc
