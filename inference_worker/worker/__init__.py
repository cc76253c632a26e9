"""The GPU worker process: ``python -m inference_worker.worker`` (see ``__main__``)."""
