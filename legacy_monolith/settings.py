"""Settings for the legacy shop, in the Django manner: module-level constants read once."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
REPO_ROOT = BASE_DIR.parent

# One data dir for the monolith and the services, so `import-from-legacy` can find us.
DEFAULT_DATA_DIR = REPO_ROOT / "var"
DATABASE_NAME = "legacy.sqlite3"
UPLOAD_DIR_NAME = "uploads"

# A demo secret: the monolith signs session cookies with it. Never reuse in production.
SECRET_KEY = os.environ.get("LEGACY_SECRET_KEY", "legacy-monolith-demo-secret-do-not-use-in-production")

INSTALLED_APPS = (
    "legacy_monolith.core",
    "legacy_monolith.accounts",
    "legacy_monolith.inventory",
    "legacy_monolith.orders",
    "legacy_monolith.payments",
    "legacy_monolith.shipping",
    "legacy_monolith.events",
)

# Ids above this are made by the extracted services (their rows reach us as events);
# the monolith allocates below it. Must match extracted_services.common.db.SERVICE_ID_BASE (the services allocate from it up).
SERVICE_ID_BASE = 1_000_000_000

SESSION_COOKIE_NAME = "sessionid"
SESSION_COOKIE_AGE_S = 14 * 24 * 3600
CSRF_COOKIE_NAME = "csrftoken"
CSRF_FORM_FIELD = "csrfmiddlewaretoken"
CSRF_HEADER_NAME = "x-csrftoken"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/accounts/profile/"

# Behind the strangler proxy the public host and scheme arrive in X-Forwarded-*.
USE_X_FORWARDED_HOST = True
APPEND_SLASH = True

# Django's default is far higher; the demo favours fast logins and fast tests.
PASSWORD_HASH_ITERATIONS = 20_000

GZIP_MINIMUM_SIZE = 500
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_FORM_BYTES = 1024 * 1024
SLOW_REPORT_DEFAULT_S = 2.0
SLOW_REPORT_MAX_S = 60.0
CURRENCY = "EUR"


def data_dir() -> Path:
    """$STRANGLER_DATA_DIR (which `--data-dir` sets) as it is now, else var/ in the repository."""
    return Path(os.environ.get("STRANGLER_DATA_DIR") or DEFAULT_DATA_DIR)
