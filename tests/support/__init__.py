"""Real servers on 127.0.0.1 for integration tests: upstreams in threads, the proxy as a process."""
