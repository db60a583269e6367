from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"
    verbose_name = "Inference"

    def ready(self):
        # Imported here: these modules import models, which cannot load before the app registry is ready.
        from apps.core.health import health_check_register

        # The same reason: services imports the registry's models.
        from apps.inference.services import check_inference

        health_check_register("inference", check_inference)
