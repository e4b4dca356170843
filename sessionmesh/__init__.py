"""What every Session Mesh process shares: generated stubs, settings helpers, validation."""

__version__ = "0.1.0"
