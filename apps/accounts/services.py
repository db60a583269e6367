from django.db import transaction

from apps.accounts.models import User


def user_create(*, username: str, email: str, password: str) -> User:
    return User.objects.create_user(username=username, email=email.strip().lower(), password=password)


@transaction.atomic
def user_delete(*, user: User) -> None:
    """Delete an account with everything it owns; the owner's model artifacts leave the disk once committed."""
    from apps.registry.services import registered_model_delete

    for registered_model in user.registered_models.all():
        registered_model_delete(registered_model=registered_model)
    user.delete()
