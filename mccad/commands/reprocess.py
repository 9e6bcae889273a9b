"""``mccad reprocess``: analyse finished studies again on the ``batch`` queue (after a model upgrade, for example),
so that new studies on the ``interactive`` queue are not held up behind them."""
from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path


def parse_since(text: str) -> float:
    """An ISO date or date-time (UTC when no zone is given) as UNIX seconds."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date such as 2026-11-01 or 2026-11-01T08:00") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reprocess", help="queue finished studies for analysis again (batch queue)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--since", type=parse_since, metavar="DATE", help="studies finished at or after DATE (UTC)")
    which.add_argument("--study", nargs="+", metavar="UID", help="these studies")
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help="model bundle to use (default: each worker's MCCAD_MODEL_DIR)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from worker.app import make_celery, publish_study
    from worker.ledger import BATCH, COMPLETE, DEAD_LETTERED, DONE, FAILED, QUEUED, Ledger
    from worker.service import model_dir_problem

    model_dir = None
    if args.model is not None:
        problem = model_dir_problem(args.model)
        if problem:
            raise UserError(problem)
        model_dir = str(args.model.resolve())
    ledger = Ledger(settings.effective_ledger_url)
    uids = args.study if args.study else [r.study_uid for r in ledger.finished_since(args.since)]
    app = make_celery(settings)
    queued, skipped, not_published = [], {}, []
    for uid in uids:
        if not ledger.prepare_rerun(uid, queue=BATCH, model_dir=model_dir,
                                    states=(DONE, FAILED, DEAD_LETTERED, COMPLETE, QUEUED)):
            record = ledger.get(uid)
            skipped[uid] = record.state if record else "unknown"
            continue
        try:
            publish_study(app, uid, queue=BATCH, model_dir=model_dir)
        except Exception:
            not_published.append(uid)  # stays complete: `mccad serve` publishes it when the broker is back
            continue
        ledger.mark_queued(uid)
        queued.append(uid)
    report = {"queued": queued, "skipped": skipped, "not_published": not_published, "model_dir": model_dir}
    print(json.dumps(report, indent=2) if args.json else
          f"queued {len(queued)} studies on '{BATCH}'; skipped {len(skipped)} (busy or unknown); "
          f"left {len(not_published)} for `mccad serve` to publish")
    return 1 if not_published and not queued else 0
