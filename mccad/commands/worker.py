"""``mccad worker``: a thin wrapper over ``celery worker`` for our app; one per GPU (solo pool, one study at a time)."""
from __future__ import annotations

import argparse
import os

from settings.logs import configure_service_logging

QUEUES = "interactive,batch"  # worker.ledger.INTERACTIVE, BATCH (not imported: keeps `mccad --help` fast)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="analyse queued studies (Celery worker; one per GPU)")
    p.add_argument("--queues", default=QUEUES,
                   help="queues to consume, comma-separated (default interactive,batch, served in turn; "
                        "dedicate workers with --queues interactive so new studies never wait behind reprocessing)")
    p.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"],
                   help="solo (default): the study runs in this process, one at a time; prefork: in a child that "
                        "is replaced if the study kills it")
    p.add_argument("--concurrency", type=int, default=1, help="studies at once (keep 1 per GPU)")
    p.add_argument("--hostname", default=None, help="Celery node name (default mccad@<host>-<pid>)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="override MCCAD_DEVICE")
    p.add_argument("--preload", action="store_true",
                   help="load the default model bundle before taking work (fails early on a broken bundle)")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by `mccad serve`
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from worker.tasks import pipeline_for, worker_app  # Celery and the models: loaded only by this command

    if args.parent_pid is not None:
        from worker.service import exit_with_parent

        exit_with_parent(args.parent_pid)
    if args.device:
        settings = settings.model_copy(update={"device": args.device})
    configure_service_logging(settings, "worker", args.log_level)
    app = worker_app(settings)
    if args.preload and args.pool == "solo":
        pipeline_for(settings.model_dir, settings.device, settings.threads, settings.explain,
                     settings.detector_runtime)
    start_supervisor(settings)
    hostname = args.hostname or f"mccad@%h-{os.getpid()}"
    argv = ["worker", f"--pool={args.pool}", f"--concurrency={args.concurrency}", f"--queues={args.queues}",
            f"--hostname={hostname}", f"--loglevel={settings.log_level.upper()}", "--without-gossip",
            "--without-mingle"]
    app.worker_main(argv=argv)
    return 0


def start_supervisor(settings) -> None:
    """This worker's heartbeat and a supervisor loop (``worker.supervisor``) in daemon threads: every worker
    reconciles the ledger with the broker, so a study stalls on no host even when ``mccad serve`` is down."""
    import threading
    import time

    from worker.app import make_celery, publish_study, ready_study_uids
    from worker.service import destinations_answer
    from worker.supervisor import Supervisor
    from worker.tasks import ensure_heartbeat, ledger_for

    ledger = ledger_for(settings)
    ensure_heartbeat(ledger)
    app = make_celery(settings)  # its own app: publishing from this thread shares no producer with the consumer
    supervisor = Supervisor(settings, ledger, lambda uid, q, m: publish_study(app, uid, queue=q, model_dir=m),
                            lambda: ready_study_uids(app), destinations_up=lambda: destinations_answer(settings))

    def loop() -> None:
        while True:
            supervisor.tick_if_due()
            time.sleep(min(1.0, settings.supervise_interval_s))

    threading.Thread(target=loop, name="mccad-supervisor", daemon=True).start()
