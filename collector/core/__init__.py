"""The sans-IO protocol core: wire formats, reassembly, the document, LoRaWAN facts.

Nothing here reads a clock, touches a socket, a file or a logger: every function takes
the time it needs as an argument and returns what happened. The service, the simulator
and the radio bench all drive this same code (``tests/test_architecture.py`` enforces
the rule).
"""
