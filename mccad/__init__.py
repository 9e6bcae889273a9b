"""mccad: computer-aided detection of microcalcifications on mammograms, integrated with PACS (the ``mccad`` command).
The version lives in :mod:`settings.version`."""
