"""``mccad status``: studies per state, what waits in the queues, and the latest failures with their reasons."""
from __future__ import annotations

import argparse
import datetime as dt
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show studies per state, queue depths and the last failures")
    p.add_argument("--failures", type=int, default=10, metavar="N", help="how many recent failures to list")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def collect_status(settings, failures: int = 10) -> dict:
    from worker.ledger import DEAD_LETTERED, FAILED, Ledger

    ledger = Ledger(settings.effective_ledger_url)
    try:
        from worker.app import make_celery, queue_depths

        depths: dict[str, int] | None = queue_depths(make_celery(settings))
    except Exception:
        depths = None  # the broker is down; the ledger still answers
    last = [{"study_uid": r.study_uid, "state": r.state, "attempts": r.attempts, "reason": r.reason,
             "when": _iso(r.finished_at or r.updated_at), "queue": r.queue}
            for r in ledger.studies_in([FAILED, DEAD_LETTERED], limit=failures)]
    report = {"ledger": ledger.safe_url, "broker": "embedded" if settings.embedded_broker else "external",
              "studies": ledger.counts_by_state(), "instances": ledger.count_instances(),
              "queue_depth": depths, "last_failures": last}
    ledger.close()
    return report


def run(args: argparse.Namespace, settings) -> int:
    report = collect_status(settings, args.failures)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"ledger: {report['ledger']}   broker: {report['broker']}   instances: {report['instances']}")
    print("studies: " + "  ".join(f"{k}={v}" for k, v in report["studies"].items()))
    depth = report["queue_depth"]
    print("queues: " + ("broker unreachable" if depth is None else "  ".join(f"{k}={v}" for k, v in depth.items())))
    for f in report["last_failures"]:
        print(f"  {f['when']}  {f['state']:<13} {f['study_uid']}  attempts={f['attempts']}  {f['reason']}")
    return 0
