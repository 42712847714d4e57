"""The web listener (``--web ENDPOINT``): the page at ``/`` and the chat's WebSocket at
``/ws``, on one ``twisted.web`` site.

The page is a few static files shipped in the package (``twisted_chat/web``), read once
when the server starts and served from memory: no directory is exposed, no path from a
request ever reaches the file system, and there is no build step. Every response
carries the headers that keep the page to itself: a Content-Security-Policy that allows
only our own scripts, styles and WebSocket (no inline script, so injected markup could
not run even if some text were ever put in as HTML), no framing, no sniffing, no
referrer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IReactorTime
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from twisted_chat.server.protocol import ChatServerFactory
from twisted_chat.server.web import WEBSOCKET_PATH, ChatWebSocketFactory

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",  # the WebSocket: same host and port (CSP 3 counts ws:)
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS = {
    b"Content-Security-Policy": CONTENT_SECURITY_POLICY.encode(),
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",  # frame-ancestors, for browsers that predate it
    b"Cross-Origin-Opener-Policy": b"same-origin",
    b"Cross-Origin-Resource-Policy": b"same-origin",
    b"Permissions-Policy": b"camera=(), microphone=(), geolocation=()",
}

PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "protocol.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
"""Every file the page is made of, with its type: all that the listener serves."""


def secured(request: Request) -> None:
    """Put the security headers on a response."""
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


@dataclass(frozen=True)
class PageFile:
    body: bytes
    content_type: bytes
    etag: bytes


class StaticFile(Resource):
    """One of the page's files, from memory; revalidated on each load (``no-cache``
    with an ETag), so that a new version of the server is a new page at once."""

    isLeaf = True

    def __init__(self, page_file: PageFile) -> None:
        super().__init__()
        self._file = page_file

    def render_GET(self, request: Request) -> bytes:
        secured(request)
        if request.postpath not in ([], [b""]):
            return not_found(request)  # /app.js/anything is no file of ours
        request.setHeader(b"Cache-Control", b"no-cache")
        if request.setETag(self._file.etag) == http.CACHED:
            return b""
        request.setHeader(b"Content-Type", self._file.content_type)
        return self._file.body


def not_found(request: Request) -> bytes:
    secured(request)
    request.setResponseCode(http.NOT_FOUND)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return b"Not found.\n"


class NotFound(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return not_found(request)


class PageRoot(Resource):
    """``/``: the page; its files by name; ``/ws``: the chat's WebSocket."""

    def __init__(self, files: dict[str, PageFile], websocket: IResource) -> None:
        super().__init__()
        self._index = StaticFile(files["index.html"])
        for name, page_file in files.items():
            self.putChild(name.encode(), StaticFile(page_file))
        self.putChild(WEBSOCKET_PATH, websocket)

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self._index
        return NotFound()


class QuietSite(Site):
    """A site that keeps no access log: the chat logs what matters (logins, refusals,
    security events), and an access log line per page load says nothing more."""

    def log(self, request: http.Request) -> None:
        pass


def load_page() -> dict[str, PageFile]:
    """The page's files, read from the package (once, at start)."""
    folder = resources.files("twisted_chat.web")
    files = {}
    for name, content_type in PAGE_FILES.items():
        body = folder.joinpath(name).read_bytes()
        etag = hashlib.sha256(body).hexdigest()[:32].encode()
        files[name] = PageFile(body, content_type.encode(), b'"' + etag + b'"')
    return files


def web_site(
    chat_factory: ChatServerFactory,
    clock: IReactorTime,
    allowed_origins: frozenset[str] = frozenset(),
) -> Site:
    """The web listener's site, for the chat of ``chat_factory``."""
    websocket = WebSocketResource(ChatWebSocketFactory(chat_factory, clock, allowed_origins))
    site = QuietSite(PageRoot(load_page(), websocket), reactor=clock)
    site.displayTracebacks = False
    return site
