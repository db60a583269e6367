from django.apps import AppConfig


class TuningConfig(AppConfig):
    name = "apps.tuning"
    label = "tuning"
    verbose_name = "Customization"

    def ready(self):
        # Imported here: these modules import models, which cannot load before the app registry is ready.
        from apps.registry.services import deletion_guard_register
        from apps.tuning.selectors import registered_model_deletion_refusal

        # Customization protects the models its jobs train from and the fine-tunes built on them.
        deletion_guard_register(registered_model_deletion_refusal)
