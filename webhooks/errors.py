"""Webhook errors; `router/webhook_api.py` turns them into gRPC status codes in one place.

WebhookError
├── InvalidWebhook       INVALID_ARGUMENT     bad input; `field` names the request field
├── WebhookNotFound      NOT_FOUND            unknown id, or another tenant's
├── TooManyWebhooks      RESOURCE_EXHAUSTED   the tenant holds MAX_WEBHOOKS already
├── WebhooksOff          FAILED_PRECONDITION  no store configured, or no key to seal secrets
├── StoreUnavailable     UNAVAILABLE          Redis or the SQLite file did not answer
└── SealError            FAILED_PRECONDITION  a sealed value needs a key this process lacks
"""

from __future__ import annotations


class WebhookError(Exception):
    """Base of every webhook error; the message goes to the client."""


class InvalidWebhook(WebhookError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class WebhookNotFound(WebhookError):
    pass


class TooManyWebhooks(WebhookError):
    pass


class WebhooksOff(WebhookError):
    pass


class StoreUnavailable(WebhookError):
    pass


class SealError(WebhookError):
    pass
