"""Playground jobs (web side) and the OPT inference engine (GPU side).

The web process must never import torch: only ``inference_worker.engine`` and the
CLI (``python -m inference_worker``) do.
"""
