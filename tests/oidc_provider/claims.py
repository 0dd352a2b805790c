"""Claims of the test provider: the standard ones, and ``groups`` (Django's auth groups).

``groups`` is granted with the ``groups`` scope, as Keycloak, Authentik and Dex do.
"""

from django.utils.translation import gettext_lazy as _
from oidc_provider.lib.claims import ScopeClaims


def userinfo(claims, user):
    """Standard claims from a Django user (django-oidc-provider's OIDC_USERINFO hook)."""
    claims["preferred_username"] = user.username
    claims["name"] = user.get_full_name() or user.username
    claims["email"] = user.email
    claims["email_verified"] = True
    return claims


class GroupsScopeClaims(ScopeClaims):
    """The ``groups`` scope gives the ``groups`` claim: the names of the user's groups."""

    info_groups = (_("Groups"), _("The groups you are a member of."))

    def scope_groups(self):
        return {"groups": sorted(self.user.groups.values_list("name", flat=True))}
