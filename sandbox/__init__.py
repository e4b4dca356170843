"""Sandbox: an offline stand-in for WhatsApp Web's device-linking flow, with a simulated phone."""
