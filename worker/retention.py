"""The spool retention policy: instances of delivered studies are removed ``spool_retention_s`` after delivery.

The spool holds every acknowledged instance until its study is ``done`` (nothing received is lost); kept
for ever it fills the disk and the SCP answers 0xA700. A delivered study keeps its instances for the retention time
(a re-analysis with a new model reads them from here), then :func:`purge_delivered` removes them. Studies in any
other state are never touched, and an instance that arrived after the study was finished is kept.
"""
from __future__ import annotations

import logging
import time

from dicom_io.spool import Spool
from settings.logs import short_uid
from worker.ledger import DONE, Ledger

LOG = logging.getLogger("worker.retention")


def purge_delivered(ledger: Ledger, spool: Spool, retention_s: float, now: float | None = None) -> tuple[int, int]:
    """Remove the spooled instances of every study ``done`` at least ``retention_s`` seconds before ``now``.
    Returns (studies purged, bytes freed)."""
    now = time.time() if now is None else now
    purged = freed = 0
    for study_uid in spool.studies():
        record = ledger.get(study_uid)
        if record is None or record.state != DONE or record.finished_at is None:
            continue
        if record.finished_at > now - retention_s:
            continue
        bytes_freed = spool.remove_older_than(study_uid, cutoff=record.finished_at)
        purged += 1
        freed += bytes_freed
        LOG.info("spooled instances of a delivered study removed", extra={
            "event": "spool_purged", "study": short_uid(study_uid), "bytes": bytes_freed})
    return purged, freed
