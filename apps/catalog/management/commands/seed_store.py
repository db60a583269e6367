from django.core.management.base import BaseCommand

from apps.catalog.services import store_seed


class Command(BaseCommand):
    help = "Create the store's categories and its built-in apps (Text Generator, Chatbot, Translator). Idempotent."

    def handle(self, *args, **options):
        created = store_seed()
        self.stdout.write(self.style.SUCCESS(f"Store seeded ({created} new rows)." if created else "Store already seeded."))
