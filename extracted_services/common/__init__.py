"""Plumbing the extracted services share: SQLite, health, JSON errors, the command line."""
