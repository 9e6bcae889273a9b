"""The breast mask lives in ``models`` (the pipeline's gate uses it; the pipeline never imports ``training``), and
the simulator keeps reading the very same function through ``training.simulate.background``."""
from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_the_simulator_uses_the_models_breast_mask():
    import models.breast_mask as moved
    import training.simulate
    import training.simulate.background as simulator

    assert simulator.breast_mask is moved.breast_mask
    assert training.simulate.breast_mask is moved.breast_mask


def test_the_pipeline_and_the_mask_import_nothing_from_training():
    code = ("import sys, models.breast_mask, models.breast_gate, models.pipeline; "
            "print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_breast_mask_steps_on_a_phantom():
    """Background, a separate label and the eroded rim are out; a left MLO loses its upper chest-wall corner."""
    from models.breast_mask import breast_mask

    yy, xx = np.mgrid[:400, :300]
    image = np.zeros((400, 300), np.float32)
    image[(xx / 200.0) ** 2 + ((yy - 200) / 180.0) ** 2 < 1] = 0.4
    image[(xx + yy) < 120] = 0.8  # a bright corner band, as a pectoral muscle projects on MLO
    image[10:40, 250:290] = 0.9  # a label
    whole = breast_mask(image, 0.2, margin_mm=0.0)
    assert whole[200, 100] and whole[30, 10] and not whole[10:40, 250:290].any() and not whole[:, 210:].any()
    eroded = breast_mask(image, 0.2, margin_mm=4.0)
    assert eroded[200, 100] and not eroded[200, 190] and (eroded <= whole).all()
    mlo = breast_mask(image, 0.2, view="MLO", laterality="L", margin_mm=0.0)
    assert not mlo[10, 10] and mlo[200, 100]


def test_the_pectoral_muscle_is_cut_where_the_breast_begins_on_padded_film():
    """Digitised film often lies in the image with background between the image edge and the film (mini-MIAS: about
    a fifth of the width): the muscle is found at the breast's own chest-wall column, not at the image's first."""
    from models.breast_mask import breast_mask

    pad = 60
    yy, xx = np.mgrid[:400, :300 + pad]
    image = np.zeros((400, 300 + pad), np.float32)
    x = xx - pad
    breast = (x >= 0) & ((x / 200.0) ** 2 + ((yy - 200) / 180.0) ** 2 < 1)
    image[breast] = 0.4
    image[breast & ((x + yy) < 120)] = 0.8  # the muscle in the breast's upper chest-wall corner
    mlo = breast_mask(image, 0.2, view="MLO", laterality="L", margin_mm=0.0)
    assert not mlo[pad + 10, pad + 10] and not mlo[30, pad + 20] and mlo[200, pad + 100]
    assert not mlo[:, :pad].any()
