from django.contrib.auth.models import AbstractUser
from django.db import models
from django.urls import reverse
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """The store's user, custom from the first migration so that fields can be added later without pain."""

    email = models.EmailField(_("email address"), unique=True)
    bio = models.TextField(_("about you"), blank=True, max_length=1000)

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username

    def get_absolute_url(self) -> str:
        return reverse("accounts:account")

    @property
    def slug(self) -> str:
        """The username as it appears in a fine-tune's model id (`ft:<base>:<owner>:...`)."""
        return slugify(self.username) or f"user{self.pk}"
