"""The spool keeps acknowledged instances under validated names, durably, and duplicates replace each other."""
from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.spool import Spool
from dicom_io.uids import InvalidUID

STUDY = "1.2.840.113619.2.55.3.1"
SOP = "1.2.840.113619.2.55.3.1.7"


def test_path_is_built_from_validated_uids_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.path_for(STUDY, SOP) == tmp_path / "spool" / STUDY / f"{SOP}.dcm"
    for study, sop in (("../etc", SOP), (STUDY, "1.2/../../x"), (STUDY, ""), ("1.2.3 ", SOP), (STUDY, "1." + "2" * 70)):
        with pytest.raises(InvalidUID):
            spool.path_for(study, sop)
        with pytest.raises(InvalidUID):
            spool.store(study, sop, b"x")
    assert list((tmp_path / "spool").iterdir()) == []  # nothing was written for the refused names


def test_store_writes_bytes_or_writer_and_duplicates_overwrite(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.store(STUDY, SOP, b"first")
    second = spool.store(STUDY, SOP, lambda handle: handle.write(b"second"))
    assert first == second and second.read_bytes() == b"second"
    assert spool.instances(STUDY) == [second]
    assert [p.name for p in (tmp_path / STUDY).iterdir()] == [f"{SOP}.dcm"]  # no temporary file left behind


def test_store_file_copies_or_moves(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    src = tmp_path / "received.tmp"
    src.write_bytes(b"\x00" * 1000 + b"payload")
    copied = spool.store_file(STUDY, SOP, src)
    assert copied.read_bytes() == src.read_bytes() and src.exists()
    moved = spool.store_file(STUDY, "1.2.3.4", src, move=True)
    assert moved.read_bytes().endswith(b"payload") and not src.exists()
    assert spool.instances(STUDY) == sorted([copied, moved])


def test_listing_ignores_temporary_and_foreign_files_and_remove_is_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.store(STUDY, SOP, b"a")
    spool.store("1.2.3", "1.2.3.1", b"b")
    (tmp_path / STUDY / ".tmp-abc.part").write_bytes(b"half written")
    (tmp_path / STUDY / "notes.txt").write_text("not an instance")
    (tmp_path / "lost+found").mkdir()
    assert spool.studies() == sorted([STUDY, "1.2.3"])
    assert [p.name for p in spool.instances(STUDY)] == [f"{SOP}.dcm"]
    assert spool.instances("1.9.9") == []
    spool.remove_study(STUDY)
    spool.remove_study(STUDY)
    assert spool.studies() == ["1.2.3"]
