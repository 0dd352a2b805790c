"""Django settings of the test OpenID Connect provider (see tests/oidc_provider/__init__.py).

Everything comes from the environment the runner sets: the SQLite file, the provider's
own URL (the issuer is ``<url>/openid``) and the access-token lifetime. Its cookies have
names of their own: the hub runs on the same host (127.0.0.1, another port), and cookies
do not tell ports apart.
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("OIDC_TEST_SECRET_KEY", "test-provider-key-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SITE_URL = os.environ["OIDC_TEST_URL"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oidc_provider",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.oidc_provider.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["OIDC_TEST_DB"]}
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
LOGIN_URL = "/accounts/login/"
SESSION_COOKIE_NAME = "oidc_test_session"
CSRF_COOKIE_NAME = "oidc_test_csrftoken"
# fast password hashing: the tests log in many times on 2 cores
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

OIDC_USERINFO = "tests.oidc_provider.claims.userinfo"
OIDC_EXTRA_SCOPE_CLAIMS = "tests.oidc_provider.claims.GroupsScopeClaims"
OIDC_TOKEN_EXPIRE = int(os.environ.get("OIDC_TEST_TOKEN_EXPIRE", "3600"))
OIDC_IDTOKEN_EXPIRE = 600
