from django.apps import AppConfig


class InferenceWorkerConfig(AppConfig):
    name = "inference_worker"
    verbose_name = "Inference: playground jobs"
