"""The Plantbus exception hierarchy: one user-facing base, messages that say how to fix things."""

from __future__ import annotations


class PlantbusError(Exception):
    """Base of every error Plantbus raises on purpose; its message is meant for an operator."""


class ConfigError(PlantbusError):
    """The configuration is wrong; the message names the path and the fix."""


class TopicError(PlantbusError):
    """A topic string or id is not valid Sparkplug / UNS."""


class PayloadError(PlantbusError):
    """A Sparkplug payload is malformed or a value does not fit its datatype."""


class WriteError(PlantbusError):
    """A write to a device cannot be sent (unknown path, read-only, wrong type, node offline)."""


class AuthenticationFailed(PlantbusError):
    """A server refused our identity (wrong password, anonymous not allowed, rejected certificate): retrying soon
    cannot help until someone fixes the credentials, so supervisors retry it only at their slowest pace."""
