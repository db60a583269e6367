import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")
django.setup(set_prefix=False)

# After Django's set-up: the handler reads the settings. Django's request handling as WSGI runs it, in an ASGI server
# (apps/core/asgi.py says why).
from apps.core.asgi import StoreASGIHandler  # noqa: E402

django_application = StoreASGIHandler()

# After Django's set-up (it reads the settings): the body cap goes in front of Django's handler, which would
# otherwise write a whole oversized body to a temporary file before any middleware could refuse it.
from apps.core.uploads import BodyLimitASGI  # noqa: E402

application = BodyLimitASGI(django_application)
