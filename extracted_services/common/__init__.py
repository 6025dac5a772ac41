"""Plumbing the extracted services share: SQLite, health, JSON errors, the command line.
The domain events (outbox, relay, inbox) are the `domain_events` library, which the monolith uses too."""
