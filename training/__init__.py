"""Offline work, one subpackage a step: ``simulate`` (clusters inserted into real and synthetic mammograms),
``datasets`` (readers into one Sample format, patient-level splits), ``trainers`` (experiment config and the training
loops), ``evaluation`` (prediction over a dataset, the paper's metrics, FROC, reports); ``export`` and ``reissue``
write model bundles, ``adapt`` fits a bundle to a site's normals. Imports ``models`` (and ``dicom_io`` to write
synthetic DICOM); nothing but the CLI imports it."""
