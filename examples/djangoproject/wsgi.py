"""``unicornd -w 4 examples.djangoproject.wsgi`` (the module's ``application``, as Django names it)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.djangoproject.settings")
application = get_wsgi_application()
