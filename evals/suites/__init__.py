"""Bundled eval suites: ``support.yaml`` for the reference agent, and the custom scorers it uses."""
