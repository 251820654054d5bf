"""Admin and development entry points (``python -m scripts.NAME``); each is thin over wx_backend."""
