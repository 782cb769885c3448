"""A fake Efimis (Practice Evolve) API on loopback, for tests, benchmarks and the demo."""
