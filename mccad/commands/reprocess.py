"""``mccad reprocess``: analyse finished studies again on the ``batch`` queue (after a model upgrade, for example),
so that new studies on the ``interactive`` queue are not held up behind them, and say what each will do.

A study whose stored result was made by the same model from the same instances (the worker's ``work_key``) is
re-sent as it is, since the same model gives the same result; ``--force`` analyses it again all the same. A study
analysed by another model gets a new result whose SRs name the earlier ones as their predecessors
(``dicom_io.outputs``)."""
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
    p.add_argument("--force", action="store_true",
                   help="analyse again even where the stored result is the same model's (default: re-send it)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _models(result_json: Path) -> list[str]:
    """role=name@version of each model that made the stored result (none when there is no readable result)."""
    try:
        models = json.loads(result_json.read_text()).get("models", [])
        return [f"{m['role']}={m['name']}@{m['version']}" for m in models]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def plan_study(settings, study_uid: str, model_dir: Path, force: bool) -> dict:
    """What reprocessing ``study_uid`` with the bundle ``model_dir`` will do: ``action`` "analyse" or "re-send",
    the models of the stored result it replaces (``replaces``) and why."""
    from dicom_io.spool import Spool
    from worker.tasks import work_key

    out_dir = settings.results_dir / study_uid
    try:
        earlier = json.loads((out_dir / "work.json").read_text())
    except (OSError, ValueError):
        earlier = None
    previous = _models(out_dir / "result.json")
    paths = Spool(settings.spool_dir).instances(study_uid)
    same = bool(earlier and paths and earlier.get("key") == work_key(study_uid, paths, model_dir))
    if same and not force:
        return {"action": "re-send", "replaces": [], "previous_models": previous,
                "why": "the stored result is this model's, from the same instances (--force analyses again)"}
    why = ("forced" if same else "another model or other instances" if earlier else "no stored result")
    return {"action": "analyse", "replaces": previous if earlier and not same else [], "previous_models": previous,
            "why": why}


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
    queued, skipped, not_published, plans = [], {}, [], {}
    for uid in uids:
        plan = plan_study(settings, uid, Path(model_dir or settings.model_dir), args.force)
        if not ledger.prepare_rerun(uid, queue=BATCH, model_dir=model_dir,
                                    states=(DONE, FAILED, DEAD_LETTERED, COMPLETE, QUEUED)):
            record = ledger.get(uid)
            skipped[uid] = record.state if record else "unknown"
            continue
        if plan["action"] == "analyse":  # the worker re-sends whatever work.json vouches for: take that away
            (settings.results_dir / uid / "work.json").unlink(missing_ok=True)
        plans[uid] = plan
        try:
            publish_study(app, uid, queue=BATCH, model_dir=model_dir)
        except Exception:
            not_published.append(uid)  # stays complete: `mccad serve` publishes it when the broker is back
            continue
        ledger.mark_queued(uid)
        queued.append(uid)
    report = {"queued": queued, "skipped": skipped, "not_published": not_published, "model_dir": model_dir,
              "plans": plans}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for uid, plan in plans.items():
            replaced = f"; replaces the result of {', '.join(plan['replaces'])}" if plan["replaces"] else ""
            print(f"{uid}: {'analyse again' if plan['action'] == 'analyse' else 're-send the stored result'} "
                  f"({plan['why']}){replaced}")
        print(f"queued {len(queued)} studies on '{BATCH}'; skipped {len(skipped)} (busy or unknown); "
              f"left {len(not_published)} for `mccad serve` to publish")
    return 1 if not_published and not queued else 0
