"""Minimal Django settings for ``unicornd examples.djangoproject.wsgi`` (``pip install django``).

A real project keeps its secret out of the source and sets ALLOWED_HOSTS to its names.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.djangoproject.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {}
USE_TZ = True
# Behind a proxy that unicornd trusts (forwarded_allow_ips), wsgi.url_scheme is already
# https when the client used TLS; Django reads it, so SECURE_PROXY_SSL_HEADER is not needed.
