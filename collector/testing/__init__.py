"""Tooling shipped with the collector for the tests, the simulator, the radio rig and
the reports: the stand-in Web App, a loopback harness, the one blocking HTTP client,
the one record generator and the one progress bar. Nothing in the service imports it."""
