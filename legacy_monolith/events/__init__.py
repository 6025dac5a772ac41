"""Domain events across the seam: the outbox the monolith's writes fill, and the inbox for the services' events."""
