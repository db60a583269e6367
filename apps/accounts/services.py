import hashlib
import secrets
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from apps.accounts.limits import Quota, request_take
from apps.accounts.models import APIKey, User
from apps.core import generations
from apps.registry.services import registered_model_delete


def user_create(*, username: str, email: str, password: str) -> User:
    return User.objects.create_user(username=username, email=email.strip().lower(), password=password)


def user_signup(*, address: str, username: str, email: str, password: str) -> User:
    """A new account from a client address: one of SIGNUP_PER_ADDRESS_PER_HOUR (RateLimited when spent), so new
    accounts are no way around the per-user limits. Only a valid form reaches here (a typo costs nothing)."""
    request_take(quotas=[Quota(f"signup:{address}", settings.SIGNUP_PER_ADDRESS_PER_HOUR, tokens=1 << 62,
                                 window=settings.SIGNUP_WINDOW_SECONDS)])
    return user_create(username=username, email=email, password=password)


@transaction.atomic
def user_delete(*, user: User) -> None:
    """Delete an account with everything it owns; its files and model artifacts leave the disk once committed.

    Jobs go first: they point at the user's files and models, which may not go while something points at them.
    """
    uploads = [Path(f.file.path) for f in user.training_files.all() if f.file]
    user.finetuning_jobs.all().delete()
    user.store_apps.all().delete()
    for registered_model in user.registered_models.order_by("-created_at"):  # fine-tunes of fine-tunes first
        registered_model_delete(registered_model=registered_model)
    user.delete()
    transaction.on_commit(lambda: [path.unlink(missing_ok=True) for path in uploads])


API_KEY_PREFIX = "sk-store-"


def api_key_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, user: User, name: str, expires_at=None) -> tuple[APIKey, str]:
    """Create a key; returns (row, the key itself). The key is not stored and cannot be shown again."""
    raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = APIKey.objects.create(
        user=user, name=name.strip() or "API key", prefix=raw[: len(API_KEY_PREFIX) + 4], hashed_key=api_key_hash(raw),
        expires_at=expires_at,
    )
    return key, raw


def api_key_revoke(*, key: APIKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


API_KEYS = "api-keys"  # the generation counter of keys and their users (apps/core/generations.py)
API_KEY_CACHE_SECONDS = 300


def api_keys_changed(**_kwargs) -> None:
    generations.bump(API_KEYS)


def _user_saved(update_fields=None, **_kwargs) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login changes nothing a key's check reads
    api_keys_changed()


def api_keys_connect() -> None:
    """Every change to a key or a user (revoked, expired, deleted, deactivated) moves the counter, in its own
    transaction: a key found under the counter's value stays right for as long as the value does."""
    for signal in (post_save, post_delete):
        signal.connect(api_keys_changed, sender=APIKey, dispatch_uid=f"api-keys-{signal is post_save}")
    post_save.connect(_user_saved, sender=User, dispatch_uid="api-keys-user-save")
    post_delete.connect(api_keys_changed, sender=User, dispatch_uid="api-keys-user-delete")


def api_key_authenticate(raw: str) -> APIKey | None:
    """The active key for this secret, with its user, or None. Marks it used (at most once a minute).

    A found key is kept for the next requests under the key counter's value (a read of one row instead of a
    joined query to compile); whether it is revoked, expired or its user inactive is still decided here, each time,
    on that copy, which a change to the key or the user replaces."""
    digest = api_key_hash(raw)
    cache_key = f"api-key:{generations.current(API_KEYS)}:{digest}"
    key = cache.get(cache_key)
    changed = key is None
    if key is None:
        key = APIKey.objects.select_related("user").filter(hashed_key=digest).first()
        if key is None:
            return None  # unknown keys are not kept: guesses would fill the cache
    now = timezone.now()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now) or not key.user.is_active:
        return None
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        APIKey.objects.filter(pk=key.pk).update(last_used_at=now)  # no signal: the counter stays
        key.last_used_at, changed = now, True
    if changed and not transaction.get_connection().in_atomic_block:  # a rollback could move the counter back
        cache.set(cache_key, key, API_KEY_CACHE_SECONDS)
    return key
