"""Routes of the playground: the page and its endpoints, the staff pages, the OpenAI-compatible API."""

from django.urls import path

from inference_worker import apis, views

app_name = "inference_worker"

urlpatterns = [
    path("playground/", views.playground, name="playground"),
    path("playground/history/", views.history, name="history"),
    path("playground/tokens", views.token_count, name="token_count"),
    path("playground/jobs", views.job_create, name="job_create"),
    path("playground/jobs/<uuid:pk>/", views.job_detail, name="job_detail"),
    path("playground/jobs/<uuid:pk>/events", views.job_events, name="job_events"),
    path("playground/jobs/<uuid:pk>/cancel", views.job_cancel, name="job_cancel"),
    path("playground/jobs/<uuid:pk>/flag", views.job_flag, name="job_flag"),
    path("review/moderation/", views.moderation, name="moderation"),
    path("review/moderation/<int:pk>/resolve", views.moderation_resolve, name="moderation_resolve"),
    path("review/workers/", views.workers, name="workers"),
    path("review/users/<int:user_pk>/playground-limits", views.user_limits, name="user_limits"),
    path("api/v1/completions", apis.completions, name="api_completions"),
    path("api/v1/models", apis.models, name="api_models"),
    path("api/v1/models/<str:slug>", apis.models, name="api_model"),  # any name: a 404 in OpenAI's shape
]
