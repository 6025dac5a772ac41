"""Plumbing the extracted services share: SQLite, health, JSON errors, the command line, and the
domain events (outbox, relay, inbox) that the monolith uses too."""
