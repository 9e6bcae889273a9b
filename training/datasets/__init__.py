"""Dataset readers into one typed :class:`training.datasets.samples.Sample` format, and patient-level splits."""
