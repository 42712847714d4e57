"""Logging in, as the handout asks: a username, then its password; an unknown name is
a new account, whose password a person types twice (a typo would lock them out of the
account they just made; a script, on a pipe, types it once). A refused step asks
again, except on a pipe, where the script's next line must never be taken for a
username."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from twisted_chat import wire
from twisted_chat.client.link import server_error
from twisted_chat.client.seams import EXIT_FAILURE
from twisted_chat.client.stages import Stage

if TYPE_CHECKING:
    from twisted_chat.client.session import ClientSession


class Login:
    """The username and password steps of one session."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self._new_account = False
        """The username asked for is a new account (its password creates it)."""
        self._first_password: str | None = None
        """A new account's password typed once, waiting to be typed again."""

    def ask_username(self) -> None:
        session = self._session
        if not session.move(Stage.USERNAME):
            return
        session.display.ask("Username: ")
        session.drain()

    def username_entered(self, user: str) -> None:
        session = self._session
        if not user:
            session.display.ask("Username: ")
            return
        session.move(Stage.CHECKING_NAME)

        def answered(result: dict[str, Any]) -> None:
            if not session.move(Stage.PASSWORD):
                return
            session.user = user
            self._new_account = result.get("account") == "new"
            if self._new_account:
                session.display.show(f"This is a new user. Enter a password to create {user}.")
            self.ask_password()
            session.drain()

        def refused(failure: Failure) -> None:
            error = server_error(failure)
            session.display.show(error.text)
            if session.scripted:
                session.finish(EXIT_FAILURE)
            else:
                self.ask_username()

        session.request(wire.Login(user)).addCallback(answered).addErrback(refused).addErrback(
            session.unexpected
        )

    def ask_password(self) -> None:
        """The password prompt, saying what it is for (a new account's, or the one)."""
        self._first_password = None
        self._session.display.ask(
            "New password: " if self._new_account else "Password: ", secret=True
        )

    def password_entered(self, password: str) -> None:
        session = self._session
        if self._new_account and not session.scripted:
            if self._first_password is None:
                self._first_password = password
                session.display.ask("Repeat the new password: ", secret=True)
                return
            if password != self._first_password:
                session.display.show("The two passwords differ. Enter the new password again.")
                self.ask_password()
                return
        self._first_password = None
        session.move(Stage.CHECKING_PASSWORD)

        def welcomed(_: dict[str, Any]) -> None:
            if session.reconnector is not None:
                session.reconnector.password = password  # in memory, to log in again
            if session.move(Stage.ONLINE):
                session.online_now()

        def refused(failure: Failure) -> None:
            error = server_error(failure)
            session.display.show(error.text)
            if error.code == "locked" or session.scripted:
                session.finish(EXIT_FAILURE)
            elif error.code in ("already-online", "username-taken"):
                self.ask_username()
            elif session.move(Stage.PASSWORD):
                self.ask_password()  # "New password: " again for a new account
                session.drain()

        session.request(wire.Password(password)).addCallback(welcomed).addErrback(
            refused
        ).addErrback(session.unexpected)
