"""Everything that speaks DICOM: reading MG instances, the C-STORE SCP and SCU, and the writers and readers of our
result objects (SR, SEG, GSPS). No model code here; it may import ``models`` for result and input types only."""
