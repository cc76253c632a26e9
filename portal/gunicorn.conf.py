"""gunicorn settings for production: uvicorn workers serve the ASGI app (streaming)."""

import multiprocessing
import os

import gunicorn.http.wsgi
from uvicorn_worker import UvicornWorker


class QuietUvicornWorker(UvicornWorker):
    """uvicorn without the ``server: uvicorn`` header naming the software."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "server_header": False}

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = QuietUvicornWorker
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 60))
graceful_timeout = 30
# An empty GUNICORN_ACCESS_LOG turns the access log off (the downloads service records every
# use of a link as a DownloadEvent row already).
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
# The server never rewrites the client address from forwarded headers: Django decides it, in
# access.http.client_ip, trusting TRUSTED_PROXY_COUNT hops.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")

# gunicorn's own sync workers (the downloads service) always send a Server header, with no
# setting to turn it off: make it name no software.
gunicorn.http.wsgi.SERVER = "gatehouse"
