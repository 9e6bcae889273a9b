"""dcmtk's peers are found by path even where pynetdicom's scripts of the same names come first on the PATH (an
activated virtual environment), which take other options and made every dcmtk-driven test fail."""
from __future__ import annotations

from pathlib import Path

from bench.common import dcmtk_tool


def _tool(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_the_python_script_of_the_same_name_is_skipped(tmp_path, monkeypatch):
    _tool(tmp_path / "venv-bin", "storescu", "#!/opt/venv/bin/python\nfrom pynetdicom.apps import x\n")
    real = _tool(tmp_path / "usr-bin", "storescu", "\x7fELF not really, but not a Python script\n")
    _tool(tmp_path / "usr-bin", "storescp", "#!/bin/sh\nexec true\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'venv-bin'}:{tmp_path / 'empty'}:{tmp_path / 'usr-bin'}")
    assert dcmtk_tool("storescu") == str(real)
    assert dcmtk_tool("storescp") == str(tmp_path / "usr-bin" / "storescp")  # a shell script is not pynetdicom's


def test_missing_or_not_executable_is_none(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "storescu").write_text("#!/bin/sh\n")  # not executable
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert dcmtk_tool("storescu") is None
    assert dcmtk_tool("storescp") is None
