"""The work of the login conversation, apart from any connection: the answer to
``hello``, which kind of account a username is, and signing in through cred, whose
realm (:class:`ChatRealm`) makes the session. The protocol moves its phases
(``phases``) on what these return."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from twisted_chat import __version__, wire
from twisted_chat.errors import ProtocolStateError
from twisted_chat.interfaces import IAccountStore, IChatClient, IChatUser
from twisted_chat.server.accounts import check_password
from twisted_chat.server.auth import FromNetwork
from twisted_chat.server.passwords import LOCAL
from twisted_chat.server.session import Session

if TYPE_CHECKING:
    from twisted_chat.server.core import Chat

SignedIn = tuple[Session, Callable[[], None]]
"""The session and cred's logout callable."""


def greeting(version: int) -> dict[str, Any]:
    """The answer to ``hello``, or :class:`ProtocolStateError` for another version."""
    if version not in wire.SUPPORTED_VERSIONS:
        spoken = ", ".join(str(v) for v in sorted(wire.SUPPORTED_VERSIONS))
        raise ProtocolStateError(
            f"Protocol version {version} is not supported; this server speaks {spoken}."
        )
    return {
        "version": version,
        "server": f"twisted-chat/{__version__}",
        "max_line": wire.MAX_INBOUND_LINE,
        "max_text": wire.MAX_TEXT_CHARS,
    }


def is_existing_account(accounts: IAccountStore, user: str) -> Deferred[bool]:
    """True for an existing account, False for a name a new account may take;
    :class:`InvalidUsername` for one it may not. Accounts added to the file by hand
    count from the next login on, so the store is refreshed first."""

    def known(_: object) -> bool:
        if accounts.exists(user):
            return True
        # Refused before a password is asked: a look-alike of an existing name, blank
        # or invisible characters, separators, mixed scripts.
        problem = accounts.new_account_problem(user)
        if problem is not None:
            raise problem
        return False

    return accounts.refresh().addCallback(known)


def sign_in(
    accounts: IAccountStore,
    portal: Portal,
    user: str,
    password: str,
    new_account: bool,
    mind: IChatClient,
    network: str = LOCAL,
) -> Deferred[SignedIn]:
    """Create the account first if it is new (a bad password raises at once), then log
    in through cred: the lockout checker, then the realm's session. ``network`` is
    where the attempt comes from (its share of the password checks)."""
    if new_account:
        check_password(password)
    created: Deferred[None] = accounts.create(user, password) if new_account else succeed(None)
    credentials = FromNetwork(user.encode("utf-8"), password.encode("utf-8"), network)

    def logged_in(result: tuple[object, Session, Callable[[], None]]) -> SignedIn:
        _, session, logout = result
        return session, logout

    signed_in: Deferred[SignedIn] = created.addCallback(
        lambda _: portal.login(credentials, mind, IChatUser)
    ).addCallback(logged_in)
    return signed_in


@implementer(IRealm)
class ChatRealm:
    """cred realm: a checked username becomes an online :class:`Session`."""

    def __init__(self, chat: Chat) -> None:
        self._chat = chat

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: type[Interface]
    ) -> tuple[type[Interface], object, Callable[[], None]]:
        if IChatUser not in interfaces:
            raise NotImplementedError("twisted-chat only provides IChatUser")
        # Our checker returns the username as str; cred's stubs say bytes.
        user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        session = self._chat.login(user, IChatClient(mind))
        if isinstance(session, Deferred):
            return session.addCallback(_avatar)  # type: ignore[return-value]  # cred takes a Deferred
        return _avatar(session)


def _avatar(session: Session) -> tuple[type[Interface], object, Callable[[], None]]:
    return IChatUser, session, session.logout
