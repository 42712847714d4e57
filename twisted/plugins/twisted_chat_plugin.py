"""twistd plugin: ``twistd -n chatserver --port 5000``.

Lazy on purpose: ServiceMaker names the module, which twistd imports only when the
subcommand runs. There must be no ``__init__.py`` in this directory or in ``twisted/``.
"""

from twisted.application.service import ServiceMaker

chatserver = ServiceMaker(
    "twisted-chat server",
    "twisted_chat.server.tap",
    "The twisted-chat instant-messaging server (login, presence, messaging, private chat).",
    "chatserver",
)
