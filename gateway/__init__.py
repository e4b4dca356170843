"""mesh-gateway: an HTTP API (REST, server-sent events, WAHA-compatible routes) in front of the router."""
