"""Training: the experiment file (``config``), the detector (FPNNet), SPPNet and the patch heads (pathotype, ER);
``common`` holds the loop, ``run`` dispatches an experiment."""
