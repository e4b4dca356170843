"""Webhooks that lose nothing: registry, durable outbox, signed deliveries with retries."""
