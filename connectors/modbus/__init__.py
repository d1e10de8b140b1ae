"""Modbus TCP/RTU connector: polls register maps and publishes them as a Sparkplug edge node."""
