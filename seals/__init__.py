"""The e-seal library: seal images, the seal authority, PDF sealing and verification.

Knows nothing of HTTP, MongoDB or WeChat.
"""
