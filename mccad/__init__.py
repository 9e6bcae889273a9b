"""mccad: computer-aided detection of microcalcifications on mammograms, integrated with PACS."""
__version__ = "0.2.0"
