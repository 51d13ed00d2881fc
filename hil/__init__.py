"""Radio-module drivers (RN2483/RN2903, RAK3172), their pseudo-terminal emulators
and the bench workflow (``hil`` command)."""
