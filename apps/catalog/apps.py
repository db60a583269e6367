from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "apps.catalog"
    label = "catalog"
    verbose_name = "Store catalog"

    def ready(self):
        # Imported here: these modules import models, which cannot load before the app registry is ready.
        from apps.catalog.generation import connect
        from apps.catalog.selectors import registered_model_deletion_refusal
        from apps.registry.services import deletion_guard_register

        # The catalog protects the models its apps run on; the registry asks without knowing the catalog.
        deletion_guard_register(registered_model_deletion_refusal)
        connect()  # the catalog's generation counter follows every change a listing shows
