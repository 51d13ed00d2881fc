"""Test tooling shipped with the collector: the stand-in Web App, a loopback harness and
example records. Nothing in the service imports it."""
