"""Services extracted from the legacy monolith, one bounded context and one database each."""
