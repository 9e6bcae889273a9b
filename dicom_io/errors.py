"""Errors of the DICOM layer. Each carries the DIMSE status a C-STORE SCP should answer with (PS3.4 Annex B.2.3
and PS3.7 Annex C), and a message a hospital IT person can act on, with no patient data in it."""
from __future__ import annotations


class MccadError(Exception):
    """Base of all errors that mccad reports to an operator."""


class DicomInputError(MccadError):
    """An instance we cannot use. ``status`` is the C-STORE status to return for it."""

    status: int = 0xC000  # Error: cannot understand


class NotMammogram(DicomInputError):
    status = 0xA900  # Error: data set does not match SOP class (refused: not a mammogram)


class NoPixelData(DicomInputError):
    status = 0xA900


class UnsupportedTransferSyntax(DicomInputError):
    status = 0xC000


class ImageTooLarge(DicomInputError):
    status = 0xA700  # Refused: out of resources


class TruncatedFile(DicomInputError):
    status = 0xC000


class CorruptDataset(DicomInputError):
    status = 0xC000


class UnsupportedImage(DicomInputError):
    """Valid DICOM that is not a single-frame grayscale image we can standardise (colour, multi-frame, ...)."""

    status = 0xA900
