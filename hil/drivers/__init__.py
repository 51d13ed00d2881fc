"""Drivers for LoRaWAN radio modules behind a serial port.

- :mod:`hil.drivers.modem`: what a caller sees (results, errors), the recovery
  policy, the serial link and the :class:`~hil.drivers.modem.Modem` base class;
- :mod:`hil.drivers.rn2483`: Microchip RN2483 (EU868) / RN2903 (US915);
- :mod:`hil.drivers.rak3172`: RAKwireless RAK3172 with RUI3 firmware.
"""
