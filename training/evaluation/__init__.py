"""Judging a model: run it over a dataset as the product does (``predict``), score images, breasts and lesions as the
paper defines them (``evaluate``, ``metrics``, ``froc``), break the figures down (``subgroups``), and show them
(``report``, ``false_positive_sheet``)."""
