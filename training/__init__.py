"""Offline work: dataset readers (the paper's CSV box format, synthetic studies, public datasets), training loops,
cross-validation, evaluation and export of weights. Imports ``models`` (and ``dicom_io`` to write synthetic DICOM);
nothing but the CLI imports it."""
