# One image for every Gatehouse process; the gpu target adds PyTorch for the GPU workers.
FROM python:3.11-slim-bookworm AS web
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GATEHOUSE_VAR_DIR=/var/lib/gatehouse STATIC_ROOT=/app/staticfiles
WORKDIR /app
RUN useradd --system --create-home --home-dir /home/gatehouse gatehouse \
 && mkdir -p /var/lib/gatehouse && chown gatehouse /var/lib/gatehouse
COPY pyproject.toml README.md ./
COPY manage.py ./
COPY portal ./portal
COPY access ./access
COPY artifacts ./artifacts
COPY inference_worker ./inference_worker
RUN pip install . \
 && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0
USER gatehouse
EXPOSE 8000
CMD ["gunicorn", "portal.asgi:application", "--config", "portal/gunicorn.conf.py"]

FROM web AS gpu
USER root
# PyPI's Linux build of torch bundles the CUDA libraries; the NVIDIA runtime supplies the driver.
RUN pip install ".[worker]" \
 && python -c "import inference_worker.engine"  # the worker extra is complete
USER gatehouse
# The release, checkpoint and TP degree come from docker-compose.yml (service gpu-worker).
CMD ["python", "-m", "inference_worker.worker", "--help"]
