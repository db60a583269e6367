import tempfile

import pytest


@pytest.fixture
def empty_tempdir(tmp_path, monkeypatch):
    """Python's temp folder, pointed at an empty folder: a download or a build must leave nothing there, ever."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder
