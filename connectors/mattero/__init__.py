"""A fake mattero API on loopback (``connectors.mattero.fake``), for tests, benchmarks and the demo."""
