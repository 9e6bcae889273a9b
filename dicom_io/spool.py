"""The spool: received instances on disk, one folder per study, before anything else happens to them.

Nothing received is lost: the Storage SCP acknowledges a C-STORE (PS3.4 B.2.3, status 0x0000) only after
the instance is here, written through :func:`dicom_io.durable.write_durably` (temporary name, fsync, rename, fsync
the directory). Paths are built only from UIDs that passed :func:`dicom_io.uids.require_uid` (PS3.5 section 9.1:
digits and dots), so hostile values such as ``../`` never reach the file system. A repeated instance replaces the
earlier file under the same name, which makes duplicate sends harmless.

Layout: ``<root>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``. Temporary files start with ``.tmp-`` and are ignored.
Instances still arriving over the network are written to ``<root>/.incoming/`` (same file system: moving one into
place is a rename); what is left there, or under a ``.tmp-`` name, after a crash was never acknowledged and is
removed by :meth:`Spool.remove_partials` when the SCP starts.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dicom_io.durable import fsync_dir, write_durably
from dicom_io.uids import is_valid_uid, require_uid

SUFFIX = ".dcm"
INCOMING = ".incoming"
TMP_PREFIX = ".tmp-"


class Spool:
    """Study folders under ``root``; every method that writes is durable and idempotent."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def incoming_dir(self) -> Path:
        """Where the SCP writes instances while they arrive (created by :meth:`prepare_incoming`)."""
        return self.root / INCOMING

    def prepare_incoming(self) -> Path:
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        return self.incoming_dir

    def remove_partials(self) -> int:
        """Delete files that were being written when a process died: everything in :attr:`incoming_dir` and every
        ``.tmp-`` file in a study folder. None of them was acknowledged. Call only while nothing is receiving into
        this spool. Returns how many files were removed."""
        removed = 0
        candidates = list(self.incoming_dir.iterdir()) if self.incoming_dir.is_dir() else []
        for study in self.studies():
            candidates.extend(p for p in (self.root / study).iterdir() if p.name.startswith(TMP_PREFIX))
        candidates.extend(p for p in self.root.iterdir() if p.name.startswith(TMP_PREFIX))
        for path in candidates:
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def size_bytes(self) -> int:
        """Bytes held by the spooled instances of every study (what the retention policy frees)."""
        total = 0
        for study in self.studies():
            for path in self.instances(study):
                try:
                    total += path.stat().st_size
                except FileNotFoundError:  # removed by a retention sweep meanwhile
                    continue
        return total

    def study_dir(self, study_uid: str) -> Path:
        return self.root / require_uid(study_uid, "Study Instance UID")

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        """Where an instance lives; raises :class:`dicom_io.uids.InvalidUID` for anything that is not a UID."""
        return self.study_dir(study_uid) / (require_uid(sop_uid, "SOP Instance UID") + SUFFIX)

    def store(self, study_uid: str, sop_uid: str, data: bytes | Callable[[BinaryIO], None]) -> Path:
        """Write an instance (bytes, or a function writing to the open file) durably; a duplicate overwrites."""
        return write_durably(self.path_for(study_uid, sop_uid), data)

    def store_file(self, study_uid: str, sop_uid: str, src: Path, *, move: bool = False) -> Path:
        """Put the file ``src`` (for example a chunked C-STORE receive) into the spool durably.

        With ``move`` the file is renamed into place when it is on the same file system (no second copy of a large
        mammogram), after an fsync of its data; otherwise, or across file systems, it is copied and ``src`` stays.
        """
        target = self.path_for(study_uid, sop_uid)
        src = Path(src)
        if move:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(src, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(src, target)
                fsync_dir(target.parent)
                return target
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise

        def copy(handle: BinaryIO) -> None:
            with open(src, "rb") as source:
                shutil.copyfileobj(source, handle, 1024 * 1024)

        return write_durably(target, copy)

    def instances(self, study_uid: str) -> list[Path]:
        """The instances of a study, sorted by name; an unknown study has none."""
        folder = self.study_dir(study_uid)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix == SUFFIX and is_valid_uid(p.name[: -len(SUFFIX)]))

    def studies(self) -> list[str]:
        """Study UIDs that have a folder here (folders with other names are not ours and are skipped)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_valid_uid(p.name))

    def remove_older_than(self, study_uid: str, cutoff: float) -> int:
        """Delete the study's instances last written at or before ``cutoff`` (UNIX seconds), and its folder when
        that leaves it empty; returns the bytes freed. An instance written after ``cutoff`` (a late resend racing
        with a retention sweep) is kept: only what was analysed and delivered goes."""
        folder = self.study_dir(study_uid)
        if not folder.is_dir():
            return 0
        freed = 0
        for path in self.instances(study_uid):
            st = path.stat()
            if st.st_mtime <= cutoff:
                path.unlink(missing_ok=True)
                freed += st.st_size
        with contextlib.suppress(OSError):  # not empty: something newer arrived
            folder.rmdir()
        fsync_dir(self.root)
        return freed

    def remove_study(self, study_uid: str) -> None:
        """Delete a study's folder (after its results are safely delivered); removing it twice is harmless."""
        folder = self.study_dir(study_uid)
        if folder.is_dir():
            shutil.rmtree(folder)
            fsync_dir(self.root)
