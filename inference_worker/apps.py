from django.apps import AppConfig


class InferenceWorkerConfig(AppConfig):
    name = "inference_worker"
    verbose_name = "Inference: playground jobs"

    def ready(self) -> None:
        from access.signals import grant_revoked, licence_version_published
        from inference_worker import receivers

        grant_revoked.connect(receivers.cancel_jobs_of_revoked_grant, dispatch_uid="inference.grant_revoked")
        licence_version_published.connect(receivers.cancel_jobs_for_new_licence, dispatch_uid="inference.licence")
