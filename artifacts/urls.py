from django.urls import path

from artifacts import apis, hub_views, views

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
    # The Hugging Face Hub's read API (artifacts/hub_views.py): repository ids with or without the namespace.
    *[route
      for prefix, extra in (("", {}), ("gatehouse/", {"namespace": "gatehouse"}))
      for route in (
          path(f"api/models/{prefix}<slug:repo>", hub_views.model_info, extra),
          path(f"api/models/{prefix}<slug:repo>/revision/<str:revision>", hub_views.model_info, extra),
          path(f"api/models/{prefix}<slug:repo>/tree/<str:revision>", hub_views.tree, extra),
          path(f"api/models/{prefix}<slug:repo>/tree/<str:revision>/<path:path>", hub_views.tree, extra),
          path(f"{prefix}<slug:repo>/resolve/<str:revision>/<path:path>", hub_views.resolve, extra),
      )],
]
