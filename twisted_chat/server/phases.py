"""The phases of a client connection and every move between them, in one table.

A connection greets (``hello``), names a user, and gives a password: for an existing
account it is checked, for a new one the account is created; then it is online until
it closes. A check that waits (the accounts file, cred) is a phase of its own, in
which no frame but ``ping`` is served: the connection stops reading until it ends.

::

    HELLO --greeted--> USERNAME --name-given--> CHECKING_NAME
    CHECKING_NAME --existing--> PASSWORD      --password-given--> CHECKING_PASSWORD
    CHECKING_NAME --new-------> NEW_PASSWORD  --password-given--> CREATING_ACCOUNT
    CHECKING_NAME --name-refused--> USERNAME
    CHECKING_PASSWORD --accepted--> ONLINE    CHECKING_PASSWORD --refused--> PASSWORD
    CREATING_ACCOUNT  --accepted--> ONLINE    CREATING_ACCOUNT  --refused--> NEW_PASSWORD
    CHECKING_PASSWORD, CREATING_ACCOUNT --name-taken--> USERNAME
    (any phase) --close--> CLOSED; a closed connection stays closed.

A locked account is answered in its checking phase and closed on the next turn.

Kept as a table rather than an Automat machine: the protocol's hot path (every event
delivered to every online user) tests ``phase is Phase.ONLINE``, one attribute read,
and the whole behaviour stays readable in the table below.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    HELLO = "hello"
    USERNAME = "username"
    CHECKING_NAME = "checking-name"
    PASSWORD = "password"
    """An existing account: waiting for its password."""
    NEW_PASSWORD = "new-password"
    """A new account: waiting for the password to create it with."""
    CHECKING_PASSWORD = "checking-password"
    CREATING_ACCOUNT = "creating-account"
    ONLINE = "online"
    CLOSED = "closed"


class Step(enum.Enum):
    GREETED = "greeted"
    NAME_GIVEN = "name-given"
    EXISTING = "existing"
    NEW = "new"
    NAME_REFUSED = "name-refused"
    PASSWORD_GIVEN = "password-given"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    NAME_TAKEN = "name-taken"
    """Someone else got there first: online now, or created the account meanwhile."""
    CLOSE = "close"


TRANSITIONS: dict[tuple[Phase, Step], Phase] = {
    (Phase.HELLO, Step.GREETED): Phase.USERNAME,
    (Phase.USERNAME, Step.NAME_GIVEN): Phase.CHECKING_NAME,
    (Phase.CHECKING_NAME, Step.EXISTING): Phase.PASSWORD,
    (Phase.CHECKING_NAME, Step.NEW): Phase.NEW_PASSWORD,
    (Phase.CHECKING_NAME, Step.NAME_REFUSED): Phase.USERNAME,
    (Phase.PASSWORD, Step.PASSWORD_GIVEN): Phase.CHECKING_PASSWORD,
    (Phase.NEW_PASSWORD, Step.PASSWORD_GIVEN): Phase.CREATING_ACCOUNT,
    (Phase.CHECKING_PASSWORD, Step.ACCEPTED): Phase.ONLINE,
    (Phase.CHECKING_PASSWORD, Step.REFUSED): Phase.PASSWORD,
    (Phase.CHECKING_PASSWORD, Step.NAME_TAKEN): Phase.USERNAME,
    (Phase.CREATING_ACCOUNT, Step.ACCEPTED): Phase.ONLINE,
    (Phase.CREATING_ACCOUNT, Step.REFUSED): Phase.NEW_PASSWORD,
    (Phase.CREATING_ACCOUNT, Step.NAME_TAKEN): Phase.USERNAME,
}


class IllegalStep(Exception):
    """A step the table has no move for: a bug in the protocol, never the client's
    doing (frames are checked against the phase before any step is taken)."""


def after(phase: Phase, step: Step) -> Phase:
    """The phase that ``step`` leads to from ``phase``."""
    if step is Step.CLOSE or phase is Phase.CLOSED:
        return Phase.CLOSED
    try:
        return TRANSITIONS[phase, step]
    except KeyError:
        raise IllegalStep(f"no step {step.value} from {phase.value}") from None
