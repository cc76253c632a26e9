from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from portal import views

admin.site.login = secure_admin_login(admin.site.login)
admin.site.site_header = "Gatehouse administration"
handler404 = views.page_not_found

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/", include("allauth.urls")),
    path("", include("artifacts.urls")),
    path("admin/", admin.site.urls),
    path("", include("access.urls")),
    path("", include("inference_worker.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
]
