"""``mccad status``: studies per state, what waits in the queues, each stuck study with why, the last failures.

Reads the ledger and peeks at the broker directly (``worker.broker_peek``, no Celery): it answers in well under a
second, and within its timeout when the broker is down.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show studies per state, queue depths, stuck studies and the last failures")
    p.add_argument("--failures", type=int, default=10, metavar="N", help="how many recent failures to list")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def collect_status(settings, failures: int = 10) -> dict:
    from worker.broker_peek import waiting_messages
    from worker.ledger import DEAD_LETTERED, FAILED, Ledger
    from worker.supervisor import stuck_studies

    ledger = Ledger(settings.effective_ledger_url)
    waiting = waiting_messages(settings, timeout_s=0.5)
    depths = None if waiting is None else {name: len(uids) for name, uids in waiting.items()}
    last = [{"study_uid": r.study_uid, "state": r.state, "attempts": r.attempts, "crashes": r.crashes,
             "reason": r.reason, "when": _iso(r.finished_at or r.updated_at), "retry_at": _iso(r.retry_at),
             "queue": r.queue}
            for r in ledger.studies_in([FAILED, DEAD_LETTERED], limit=failures)]
    stuck = [{"study_uid": st.study_uid, "state": st.state, "waiting_s": round(st.waiting_s), "why": st.why}
             for st in sorted(stuck_studies(ledger, settings), key=lambda st: -st.waiting_s)]
    report = {"ledger": ledger.safe_url, "broker": "embedded" if settings.embedded_broker else "external",
              "studies": ledger.counts_by_state(), "instances": ledger.count_instances(),
              "queue_depth": depths, "stuck": stuck, "last_failures": last}
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
    if report["stuck"]:
        print(f"stuck ({len(report['stuck'])}):")
    for s in report["stuck"]:
        print(f"  {s['state']:<13} {s['study_uid']}  for {s['waiting_s']} s  {s['why']}")
    for f in report["last_failures"]:
        retry = f"  retry at {f['retry_at']}" if f["retry_at"] and f["state"] == "failed" else ""
        print(f"  {f['when']}  {f['state']:<13} {f['study_uid']}  attempts={f['attempts']}{retry}  {f['reason']}")
    return 0
