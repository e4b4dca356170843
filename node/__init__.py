"""Session node: a gRPC server that hosts WhatsApp Web sessions in one warm Chromium."""
