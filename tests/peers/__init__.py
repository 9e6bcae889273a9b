"""Real DICOM peers for tests: Orthanc as the PACS, started on loopback with its own storage, and free-port helpers."""
