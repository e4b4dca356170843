"""Sandbox: an offline stand-in for WhatsApp Web, with a simulated WhatsApp server and phone."""
