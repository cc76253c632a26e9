"""A URLconf with every navigation target routed, to test the navigation on its own."""

from django.shortcuts import render
from django.urls import include, path


def page(request):
    return render(request, "base.html")


def app(namespace: str, name: str):
    return path(f"{namespace}/", include(([path(f"{name}/", page, name=name)], namespace)))


urlpatterns = [
    path("", include("portal.urls")),
    app("artifacts", "release_list"),
    app("inference_worker", "playground"),
    path("access/", include(([path("apply/", page, name="apply"), path("mine/", page, name="my_access"),
                              path("review/", page, name="review_queue")], "access"))),
]
