"""The playground: the bundled shop (legacy_monolith, extracted_services) and the proxy, run together.

It knows both sides; neither side knows it. `strangler demo` runs playground.demo.
"""
