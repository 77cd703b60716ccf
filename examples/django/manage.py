#!/usr/bin/env python
"""The example shop: ``python manage.py migrate && python manage.py runserver``.

With request and SQL spans too: ``opentelemetry-instrument python manage.py runserver --noreload``.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
