"""The test settings as the GPU machine can load them (bench/gpu/run.sh): that machine has no PostgreSQL client
library, which django.contrib.postgres imports at start-up, and the engine contract suite touches no database
(the store's search imports it only on PostgreSQL, apps/catalog/selectors.py)."""

from store.settings_test import *

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "django.contrib.postgres"]
