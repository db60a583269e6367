from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"

    def ready(self):
        from apps.accounts.services import api_keys_connect  # imports models: after the app registry is ready

        api_keys_connect()
