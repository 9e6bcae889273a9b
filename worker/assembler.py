"""The study assembler: decides when a study has arrived whole, and hands it to the broker exactly once.

DICOM has no "end of study" message: a PACS routes a study as one or many associations, in any order. The assembler
treats a study as complete once ``settings.study_idle_s`` seconds pass without a new instance, then publishes one
``analyze_study`` message for it. The two steps are separate ledger transitions (``receiving`` -> ``complete`` ->
``queued``): the first is won by exactly one caller, the second happens only after the broker accepted the message,
so a broker outage leaves studies ``complete`` and the next tick publishes them.

Grouping is by Study Instance UID, the unit a PACS routes and files results under. CBIS-DDSM (and other converted
archives) give every image its own Study Instance UID, so breast and exam fusion then see one view per study; such
studies still get image-level results.

A later instance for a study that is already done (or failed, or dead-lettered) re-opens it: after the idle time it
is analysed again with all its instances and its outputs replace the earlier ones (same derived UIDs).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from settings.logs import short_uid
from worker.ledger import COMPLETE, INTERACTIVE, Ledger

LOG = logging.getLogger("worker.assembler")

#: ``publish(study_uid, queue, model_dir)``; raises when the broker cannot take the message.
Publisher = Callable[[str, str, "str | None"], None]


class Assembler:
    """Registers received instances and turns idle studies into exactly one task message each."""

    def __init__(self, ledger: Ledger, publish: Publisher, idle_s: float,
                 on_registered: Callable[[object], None] | None = None) -> None:
        self.ledger = ledger
        self.publish = publish
        self.idle_s = float(idle_s)
        self.on_registered = on_registered
        self._lock = threading.Lock()

    def on_received(self, instance: object) -> None:
        """SCP callback (``dicom_io.scp.ReceivedInstance``): the instance is on disk; put it in the ledger."""
        study_uid = instance.study_uid
        self.ledger.record_instance(study_uid, instance.sop_uid, str(instance.path),
                                    calling_ae=getattr(instance, "calling_ae", None),
                                    size_bytes=getattr(instance, "size_bytes", None))
        if self.on_registered is not None:
            self.on_registered(instance)

    def tick(self, now: float | None = None) -> list[str]:
        """Mark idle studies complete and publish every complete study; returns the UIDs published now."""
        with self._lock:  # one tick at a time in this process; other processes are kept out by the ledger
            now = time.time() if now is None else now
            cutoff = now - self.idle_s
            for study_uid in self.ledger.idle_studies(cutoff):
                if self.ledger.mark_complete(study_uid, cutoff, queue=INTERACTIVE):
                    LOG.info("study complete", extra={"event": "study_complete", "study": short_uid(study_uid)})
            return self.publish_complete()

    def publish_complete(self) -> list[str]:
        """Publish every ``complete`` study (new, re-queued, or left over after a broker outage)."""
        published: list[str] = []
        for record in self.ledger.studies_in([COMPLETE]):
            queue = record.queue or INTERACTIVE
            try:
                self.publish(record.study_uid, queue, record.model_dir)
            except Exception as exc:  # broker down: keep the study complete, try again next tick
                LOG.warning("broker unavailable; %s will be published later: %s", short_uid(record.study_uid), exc,
                            extra={"event": "publish_failed", "study": short_uid(record.study_uid)})
                break
            self.ledger.mark_queued(record.study_uid)
            published.append(record.study_uid)
            LOG.info("study queued", extra={"event": "study_queued", "study": short_uid(record.study_uid),
                                            "queue": queue})
        return published
