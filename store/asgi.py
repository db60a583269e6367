import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")
django_application = get_asgi_application()

# After Django's set-up (it reads the settings): the body cap goes in front of Django's handler, which would
# otherwise write a whole oversized body to a temporary file before any middleware could refuse it.
from apps.core.uploads import BodyLimitASGI  # noqa: E402

application = BodyLimitASGI(django_application)
