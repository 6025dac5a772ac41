"""The inventory service: products and stock reservations, moved out of the monolith first."""
