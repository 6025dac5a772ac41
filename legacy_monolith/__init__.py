"""The legacy shop: one Django-style application over one database, being strangled route by route."""
