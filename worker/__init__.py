"""The service around the models: spool and ledger, study assembly, Celery tasks, outputs, health.

Kept import-light on purpose: importing ``worker`` must not import Celery or torch.
"""
