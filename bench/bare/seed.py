"""Creates the bare project's database with its 10 rows: `python -m bench.bare.seed` (BARE_DATA_DIR)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.bare.settings")


def main() -> None:
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.bare.models import Item

    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    call_command("migrate", run_syncdb=True, verbosity=0)
    Item.objects.all().delete()
    Item.objects.bulk_create(
        Item(name=f"Item {i}", description=f"The {i}th row of the bare list: a sentence of about the catalog's size.")
        for i in range(10)
    )


if __name__ == "__main__":
    main()
