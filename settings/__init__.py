"""What every layer shares, at the bottom of the package graph: the configuration object (:mod:`settings.config`),
structured logging (:mod:`settings.logs`) and the software version (:mod:`settings.version`).

Nothing here imports another package of ours, so ``models``, ``dicom_io``, ``training``, ``worker`` and the ``mccad``
command may all use it.
"""
