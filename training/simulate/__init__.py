"""Simulated microcalcification clusters inserted into real and phantom mammograms, with ground-truth boxes.

Public calcification-annotated mammograms of useful size cannot be installed here, so the detector
learns from lesion insertion, the method medical imaging uses when annotated data is scarce: realistic simulated
lesions placed in real breast backgrounds (the 8 CBIS-DDSM images of the ``mammograms`` package) and in the
synthetic phantoms of :mod:`training.simulate.synth`. The pieces, one module each:

* :mod:`training.simulate.morphology`: calcifications in millimetres (0.1-2 mm), shapes and spreads from the BI-RADS
  lexicon; benign patterns (punctate, round, coarse, rim, milk of calcium, diffuse) and suspicious ones (amorphous,
  coarse heterogeneous, fine pleomorphic, fine linear branching) in grouped, linear, segmental, regional or diffuse
  distributions. :func:`simulate_cluster`.
* :mod:`training.simulate.insert`: rendering at the image's pixel spacing with Beer-Lambert attenuation contrast
  relative to the local background, the detector's point spread, pixel-aperture averaging and the image's own noise
  level. :func:`insert_clusters`.
* :mod:`training.simulate.visibility`: the annotation rule, a cluster is annotated only when a reader would see
  three of its calcifications above the breast's texture; fainter draws are drawn again.
* :mod:`training.simulate.background`: where clusters may go (breast mask without pectoral muscle, background,
  labels or skin margin), the nipple (ducts and therefore linear and segmental clusters point to it), and the
  image's noise.
* :mod:`training.simulate.formation`: optional image formation of an acquisition source at the image's pitch,
  ``film`` (digitised screen-film: grain calibrated on real film, scanner blur, dust, scratches, stripes) or
  ``digital`` (DR detector: quantum and electronic noise, detector blur), for the background and the inserted
  clusters alike; :mod:`training.simulate.noise_stats` measures noise against signal and the noise power spectrum
  the same way on real and simulated images (``python -m training.simulate.film_calibration``).
* :mod:`training.simulate.dataset`: deterministic PNG + paper-CSV datasets (full images or crops) for training on
  the machine that trains. :func:`make_simulated_dataset`.

Label, a proxy for pathology: a cluster is ``malignant`` when its morphology is suspicious and ``benign`` when it is
typically benign. This is the BI-RADS morphology proxy, not biopsy truth (about 13-30 % of amorphous clusters and
70-80 % of fine linear branching ones are malignant in reality); see :mod:`training.simulate.morphology`.

Resolution: clusters are modelled in mm and rendered at 0.025-0.5 mm pixels (tested at 0.05-0.2 mm). The spacing
used is recorded on every cluster, every inserted lesion and in the dataset manifest. The CBIS-DDSM samples carry no
Pixel Spacing; we assume 0.05 mm (DDSM film digitised at 42-50 um).
"""
from __future__ import annotations

from training.simulate.background import breast_mask, image_noise_sigma, nipple_position
from training.simulate.dataset import REAL_SAMPLE_SPACING_MM, make_simulated_dataset
from training.simulate.insert import InsertedLesion, cluster_box, insert_clusters, render_signal
from training.simulate.morphology import (
    BENIGN_PATTERNS,
    DISTRIBUTIONS,
    MALIGNANT_PATTERNS,
    MIN_CLUSTER_CALCIFICATIONS,
    PATTERNS,
    Calcification,
    Cluster,
    Ellipsoid,
    SimulationError,
    calcification_count_range,
    label_of,
    simulate_cluster,
)
from training.simulate.visibility import MIN_VISIBLE_CALCIFICATIONS

__all__ = [
    "BENIGN_PATTERNS", "DISTRIBUTIONS", "MALIGNANT_PATTERNS", "MIN_CLUSTER_CALCIFICATIONS",
    "MIN_VISIBLE_CALCIFICATIONS", "PATTERNS",
    "REAL_SAMPLE_SPACING_MM", "Calcification", "Cluster", "Ellipsoid", "InsertedLesion", "SimulationError",
    "breast_mask", "calcification_count_range", "cluster_box", "image_noise_sigma", "insert_clusters", "label_of",
    "make_simulated_dataset", "nipple_position", "render_signal", "simulate_cluster",
]
