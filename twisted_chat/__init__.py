"""twisted-chat: a small instant-messaging system on Twisted."""

__version__ = "0.1.0"
