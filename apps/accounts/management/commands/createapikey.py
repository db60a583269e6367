import sys

from django.core.management.base import BaseCommand

from apps.accounts.models import User
from apps.accounts.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for USERNAME and print it alone on one line (it is shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="CLI key", help="a name to recognise the key by")

    def handle(self, *args, username, name, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            self.stderr.write(f"No user named {username!r}.")
            sys.exit(1)
        _, raw = api_key_create(user=user, name=name)
        self.stdout.write(raw)
