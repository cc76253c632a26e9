from django.urls import path

from artifacts import apis, views

app_name = "artifacts"

urlpatterns = [
    path("releases/", views.release_list, name="release_list"),
    path("releases/<slug:slug>/", views.release_detail, name="release_detail"),
    path("releases/<slug:slug>/download/", views.release_download, name="release_download"),
    path("releases/<slug:slug>/download/SHA256SUMS", views.release_sha256sums, name="release_sha256sums"),
    path("dl/<str:token>", views.download, name="download"),
    path("api/v1/releases/", apis.ReleaseListApi.as_view(), name="api_release_list"),
    path("api/v1/releases/<slug:slug>/manifest", apis.ManifestApi.as_view(), name="api_manifest"),
    path("api/v1/releases/<slug:slug>/download.sh", apis.ShellClientApi.as_view(), name="api_client_sh"),
    path("api/v1/releases/<slug:slug>/gatehouse_download.py", apis.PythonClientApi.as_view(), name="api_client_py"),
]
