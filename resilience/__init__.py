"""Calls that survive failing peers: the proxy guards forwarded requests with it, the shop its service calls.

Import from the modules, so that each side loads only what it uses (the proxy never loads httpx):
`policy` (RetryPolicy, BreakerPolicy), `breaker` (CircuitBreaker), `budget` (RetryBudget),
`retry` (backoff_s, call_with_retries), `errors` (CircuitOpen, CallFailed) and
`service_client` (ServiceClient, a JSON client built from all of them).
This library imports neither the proxy nor the shop.
"""
