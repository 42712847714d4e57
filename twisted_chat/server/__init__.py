"""The chat server: domain core, stores, authentication, protocol and wiring."""
