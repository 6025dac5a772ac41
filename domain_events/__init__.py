"""Domain events between the monolith and the extracted services: a library both sides use.

Each side keeps its events in its own database (transactional outbox), a relay
delivers them to the subscribers at least once, and each subscriber applies an
event once (inbox dedup by event id). The library holds no data of its own: it
is code shared across the seam, never a shared database.
"""
