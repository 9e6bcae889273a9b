"""Training loops: the detector (FPNNet), SPPNet, and the patch heads (pathotype, ER); ``common`` holds the loop."""
