from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"
    verbose_name = "Model registry"

    def ready(self):
        # Imported here: these modules import models, which cannot load before the app registry is ready.
        from apps.core.health import health_check_register

        # The same reason: this one imports core's health module.
        from apps.registry.health import check_registry

        health_check_register("registry", check_registry)
