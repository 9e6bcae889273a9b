"""Pure computation: standardisation, detector, classifiers, fusion, explanations, pipeline and weight registry.

This package imports none of mccad's other packages (docs/architecture.md): it receives pixels and metadata, and
returns typed results.
"""
