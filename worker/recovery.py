"""Recovery after a crash: the spool is the truth, the ledger is brought back in line with it, and every study that
was acknowledged but not finished is handed to the broker again.

Nothing received may be lost, yet an instance can be on disk and acknowledged while the ledger never heard of it
(the process died between the rename and the ledger insert), and a task message can be lost (embedded broker
messages a dead worker held, Redis without persistence). Both are repaired here, at ``mccad serve`` start-up and by
``mccad requeue``. Publishing a study twice is harmless: the second task finds it done, or redoes it idempotently.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from settings.logs import short_uid
from worker.assembler import Publisher
from worker.ledger import COMPLETE, DEAD_LETTERED, INTERACTIVE, UNFINISHED, Ledger

LOG = logging.getLogger("worker.recovery")


@dataclass
class RequeueReport:
    published: list[str] = field(default_factory=list)
    reopened_dead: list[str] = field(default_factory=list)
    not_published: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # study UID -> its state (done, receiving, unknown)


def register_spool(spool: object, ledger: Ledger) -> int:
    """Register every spooled instance the ledger does not know (``dicom_io.spool.Spool``); returns how many.

    Re-registered studies start ``receiving`` and are assembled after the idle time like any other."""
    known = ledger.instance_keys()
    added = 0
    for study_uid in spool.studies():  # type: ignore[attr-defined]
        for path in spool.instances(study_uid):  # type: ignore[attr-defined]
            sop_uid = path.name[: -len(path.suffix)]
            if (study_uid, sop_uid) in known:
                continue
            if ledger.record_instance(study_uid, sop_uid, str(path), size_bytes=path.stat().st_size):
                added += 1
    if added:
        LOG.warning("re-registered %d spooled instances missing from the ledger", added,
                    extra={"event": "spool_recovered", "instances": added})
    return added


def requeue(ledger: Ledger, publish: Publisher, *, include_dead: bool, study_uids: Iterable[str] | None = None,
            queue: str = INTERACTIVE) -> RequeueReport:
    """Publish again every acknowledged, unfinished study (or only ``study_uids``).

    Dead-lettered studies are included only with ``include_dead`` (an operator's decision: they get a fresh attempt
    budget); automatic start-up recovery leaves them alone so a study that kills workers stays parked."""
    report = RequeueReport()
    if study_uids is None:
        states = [*UNFINISHED, DEAD_LETTERED] if include_dead else list(UNFINISHED)
        candidates = [r.study_uid for r in ledger.studies_in(states)]
    else:
        candidates = list(study_uids)
    for index, study_uid in enumerate(candidates):
        record = ledger.get(study_uid)
        if record is None or record.state not in (*UNFINISHED, DEAD_LETTERED):
            report.skipped[study_uid] = record.state if record else "unknown"
            continue
        if record.state == DEAD_LETTERED:
            if not include_dead:
                report.skipped[study_uid] = DEAD_LETTERED
                continue
            if ledger.prepare_rerun(study_uid, queue=record.queue or queue, model_dir=record.model_dir,
                                    states=[DEAD_LETTERED]):
                report.reopened_dead.append(study_uid)
            record = ledger.get(study_uid) or record
        try:
            publish(study_uid, record.queue or queue, record.model_dir)
        except Exception as exc:  # the broker is down: do not wait out its retries once per study
            LOG.warning("could not publish %s: %s", short_uid(study_uid), exc,
                        extra={"event": "publish_failed", "study": short_uid(study_uid)})
            report.not_published.extend(candidates[index:])
            break
        if record.state == COMPLETE:
            ledger.mark_queued(study_uid)
        report.published.append(study_uid)
    if report.published:
        LOG.info("re-published %d unfinished studies", len(report.published),
                 extra={"event": "requeued", "studies": len(report.published)})
    return report

