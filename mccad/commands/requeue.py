"""``mccad requeue``: publish again every study that was acknowledged but is not done (``mccad serve`` does the
same, without dead-lettered studies, each time it starts)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("requeue", help="re-publish acknowledged studies that are not done (after a crash or outage)")
    p.add_argument("--study", nargs="+", default=None, metavar="UID", help="only these studies")
    p.add_argument("--no-dead", action="store_true",
                   help="leave dead-lettered studies alone (default: give them a fresh attempt budget)")
    p.add_argument("--scan-spool", action="store_true",
                   help="first register spooled instances missing from the ledger (as `mccad serve` does)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from worker.app import make_celery, publish_study
    from worker.ledger import Ledger
    from worker.recovery import register_spool, requeue

    ledger = Ledger(settings.effective_ledger_url)
    if args.scan_spool:
        from dicom_io.spool import Spool

        register_spool(Spool(settings.spool_dir), ledger)
    app = make_celery(settings)
    report = requeue(ledger, lambda uid, q, m: publish_study(app, uid, queue=q, model_dir=m),
                     include_dead=not args.no_dead, study_uids=args.study)
    summary = {"published": report.published, "reopened_dead_lettered": report.reopened_dead,
               "not_published": report.not_published, "skipped": report.skipped}
    print(json.dumps(summary, indent=2) if args.json else
          f"re-published {len(report.published)} studies ({len(report.reopened_dead)} were dead-lettered); "
          f"skipped {len(report.skipped)}; not published {len(report.not_published)}")
    if report.not_published:
        raise UserError(f"the broker did not take {len(report.not_published)} studies; they stay in the ledger: "
                        "start the broker, then run `mccad requeue` again")
    return 0
