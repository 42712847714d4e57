"""The client's session logic with a recording display, a scripted link and fake peers."""

from __future__ import annotations

import pytest

from tests.fakes import FAKE_FINGERPRINT, FakePeers, RecordingDisplay, ScriptedLink
from twisted_chat import wire
from twisted_chat.client.session import WELCOME, ClientSession, Stage


class Client:
    def __init__(self) -> None:
        self.display = RecordingDisplay()
        self.link = ScriptedLink()
        self.peers = FakePeers()
        self.session = ClientSession(self.display, self.peers)
        self.session.link_made(self.link)

    def type(self, *lines: str) -> None:
        for line in lines:
            self.session.line_entered(line)

    def logged_in(self, user: str = "hans") -> Client:
        self.link.answer(version=2)
        self.type(user, "secret")
        self.link.answer(account="existing")
        self.link.answer(user=user)
        self.link.answer()  # listening
        self.display.take()
        self.link.requests.clear()
        return self


@pytest.fixture
def client() -> Client:
    return Client()


def test_login_flow_prompts(client: Client) -> None:
    assert client.link.sent() == [wire.Hello(wire.PROTOCOL_VERSION)]
    assert client.display.prompts == []
    client.link.answer(version=2)
    assert client.display.prompts == [("Username: ", False)]
    client.type("hans")
    assert client.link.answer(account="existing") == wire.Login("hans")
    assert client.display.prompts[-1] == ("Password: ", True)
    client.type("falcon*solo")
    assert client.link.answer(user="hans") == wire.Password("falcon*solo")
    assert client.display.take()[0] == WELCOME
    assert client.link.answer() == wire.Listening(4321, FAKE_FINGERPRINT)
    assert client.session.stage is Stage.ONLINE


def test_lines_typed_ahead_wait_for_each_login_step(client: Client) -> None:
    client.type("hans", "falcon*solo", "whoelse")
    assert client.link.sent() == [wire.Hello(wire.PROTOCOL_VERSION)]
    client.link.answer(version=2)
    assert client.link.sent()[-1] == wire.Login("hans")
    client.link.answer(account="existing")
    assert client.link.sent()[-1] == wire.Password("falcon*solo")
    client.link.answer(user="hans")
    assert wire.WhoElse() in client.link.sent()


def test_new_user_is_asked_for_a_new_password(client: Client) -> None:
    client.link.answer(version=2)
    client.type("jaba")
    client.link.answer(account="new")
    assert "This is a new user" in client.display.take()[0]
    assert client.display.prompts[-1] == ("New password: ", True)


def test_already_online_asks_for_a_username_again(client: Client) -> None:
    client.link.answer(version=2)
    client.type("hans")
    client.link.fail("already-online", "hans is already logged in. Try another username.")
    assert client.display.take() == ["hans is already logged in. Try another username."]
    assert client.display.prompts[-1] == ("Username: ", False)
    assert client.session.stage is Stage.USERNAME


def test_wrong_password_asks_again_and_lock_exits_1(client: Client) -> None:
    client.link.answer(version=2)
    client.type("hans", "a")
    client.link.answer(account="existing")
    client.link.fail("wrong-password", "Invalid password. Please try again (2 tries left).")
    assert client.display.prompts[-1] == ("Password: ", True)
    client.type("b")
    client.link.fail("locked", "Invalid password. Your account has been blocked.")
    assert client.display.status == 1


def test_blank_username_is_asked_again_without_asking_the_server(client: Client) -> None:
    client.link.answer(version=2)
    client.type("   ")
    assert client.link.sent() == [wire.Hello(wire.PROTOCOL_VERSION)]
    assert client.display.prompts[-1] == ("Username: ", False)


def test_commands_become_requests() -> None:
    client = Client().logged_in()
    client.type(
        "whoelse",
        "whoelsesince 60",
        "message yoda Hey Dude",
        "broadcast hi all",
        "block luke",
        "unblock luke",
    )
    assert client.link.sent() == [
        wire.WhoElse(),
        wire.WhoElseSince(60),
        wire.SendMessage("yoda", "Hey Dude"),
        wire.SendBroadcast("hi all"),
        wire.Block("luke"),
        wire.Unblock("luke"),
    ]


def test_replies_are_shown_clearly() -> None:
    client = Client().logged_in()
    client.type("whoelse", "whoelse", "message luke hi", "broadcast hi", "block luke")
    client.link.answer(users=["luke", "yoda"])
    client.link.answer(users=[])
    client.link.answer(stored=True)
    client.link.answer(skipped=True)
    client.link.answer()
    assert client.display.take() == [
        "luke",
        "yoda",
        "No other users are online.",
        "you \u2192 luke: hi",  # what we said, as a chat line
        "luke is offline; they will get the message when they log in.",
        "you \u2192 all: hi",
        "Your message could not be delivered to some recipients.",
        "luke is blocked",
    ]


def test_invalid_commands_are_not_sent(client: Client) -> None:
    client = Client().logged_in()
    client.type("whatsthetime", "message yoda", "")
    assert client.link.sent() == []
    assert client.display.take() == [
        "Error. Invalid command: whatsthetime. Type help for the commands.",
        "Usage: message <user> <message>",
    ]


def test_server_errors_are_shown() -> None:
    client = Client().logged_in()
    client.type("message bob party time")
    client.link.fail("no-such-user", "Error. bob is not a user.")
    assert client.display.take() == ["Error. bob is not a user."]


def test_events_are_rendered() -> None:
    client = Client().logged_in()
    client.session.event_received(wire.Presence("yoda", True))
    client.session.event_received(wire.Message("yoda", "hi", 0.0))
    client.session.event_received(wire.Broadcast("luke", "all", 0.0))
    client.session.event_received(wire.Presence("yoda", False))
    assert client.display.take() == [
        "-!- yoda logged in",
        "yoda: hi",
        "[all] luke: all",
        "-!- yoda logged out",
    ]
    assert client.session.known_users == {"yoda", "luke"}


def test_stored_messages_show_when_they_were_sent() -> None:
    client = Client().logged_in()
    client.session.event_received(wire.Message("hans", "Let's rock", 1_700_000_000.0, True))
    (line,) = client.display.take()
    assert line.startswith("hans: Let's rock  (sent ")
    assert "while you were away" in line


def test_logout_exits_0(client: Client) -> None:
    client = Client().logged_in()
    client.type("logout")
    assert client.link.sent() == [wire.Logout()]
    client.link.answer()
    assert client.display.take() == ["You have logged out."]
    assert client.display.status == 0
    client.session.server_lost()  # the server then closes: no second message
    assert client.display.take() == []


def test_timeout_notice_exits_0() -> None:
    client = Client().logged_in()
    client.session.event_received(wire.LoggedOut("timeout"))
    assert client.display.take() == ["You have been logged out due to inactivity."]
    assert client.display.status == 0


def test_losing_the_server_exits_1_with_one_line() -> None:
    client = Client().logged_in()
    client.session.server_lost()
    assert client.display.take() == ["The connection to the server was lost."]
    assert client.display.status == 1


def test_end_of_input_logs_out_after_the_lines_before_it(client: Client) -> None:
    client.type("hans", "pw", "whoelse")
    client.session.input_closed()
    client.link.answer(version=2)
    client.link.answer(account="existing")
    client.link.answer(user="hans")
    assert client.link.sent()[-4:] == [
        wire.Listening(4321, FAKE_FINGERPRINT),
        wire.Accounts(),  # the names to complete (and our rooms), asked for at login
        wire.WhoElse(),
        wire.Logout(),
    ]


def test_end_of_input_before_login_exits_0(client: Client) -> None:
    client.link.answer(version=2)
    client.session.input_closed()
    assert client.display.status == 0


def test_ctrl_c_when_online_logs_out_and_exits_130() -> None:
    client = Client().logged_in()
    client.session.interrupted()
    assert client.link.sent() == [wire.Logout()]
    client.link.answer()
    assert client.display.take() == ["Interrupted: you have logged out."]
    assert client.display.status == 130


def test_ctrl_c_before_login_exits_130(client: Client) -> None:
    client.link.answer(version=2)
    client.type("hans")
    client.session.interrupted()
    assert client.display.status == 130


@pytest.mark.parametrize("closed_as", ["logout", "lost"])
def test_a_partner_who_leaves_is_one_line_whichever_news_comes_first(
    client: Client, closed_as: str
) -> None:
    client.logged_in()
    client.peers.sessions.add("luke")
    client.session.event_received(wire.Presence("luke", False))  # the server's news first
    assert client.display.take() == []
    client.peers.sessions.discard("luke")
    client.session.peer_closed("luke", closed_as)
    assert client.display.take() == ["luke logged out; private messaging with luke ended."]


def test_a_partner_who_logs_out_then_the_servers_news_is_one_line(client: Client) -> None:
    client.logged_in()
    client.session.peer_closed("luke", "logout")  # the peer's goodbye first
    client.session.event_received(wire.Presence("luke", False))
    assert client.display.take() == ["luke logged out; private messaging with luke ended."]
    client.session.event_received(wire.Presence("luke", True))
    client.session.event_received(wire.Presence("luke", False))  # a later logout is said
    assert client.display.take() == ["-!- luke logged in", "-!- luke logged out"]


def test_y_or_n_with_nothing_to_answer_says_so(client: Client) -> None:
    client.logged_in()
    client.type("y", "n", "yes")
    assert client.display.take() == ["There is no private messaging request to answer."] * 3
    assert client.link.requests == []


def test_the_idle_warning_is_shown(client: Client) -> None:
    client.logged_in()
    client.session.event_received(wire.IdleWarning(10.0))
    assert client.display.take() == [
        "You will be logged out for inactivity in 10 s unless you type a command."
    ]


def test_a_new_account_asks_for_the_password_twice(client: Client) -> None:
    client.link.answer(version=2)
    client.type("jaba")
    client.link.answer(account="new")
    assert client.display.prompts[-1] == ("New password: ", True)
    client.type("hutt")
    assert client.display.prompts[-1] == ("Repeat the new password: ", True)
    client.type("hutq")  # a typo
    assert client.display.take()[-1] == "The two passwords differ. Enter the new password again."
    assert client.display.prompts[-1] == ("New password: ", True)
    assert wire.Password("hutt") not in client.link.sent()
    client.type("hutt", "hutt")
    assert client.link.sent()[-1] == wire.Password("hutt")


def test_a_refused_new_password_is_asked_for_as_a_new_one_again(client: Client) -> None:
    client.link.answer(version=2)
    client.type("jaba")
    client.link.answer(account="new")
    client.type("two words?", "two words?")
    client.link.fail("invalid-password", "Error. A password cannot contain spaces.")
    assert client.display.prompts[-1] == ("New password: ", True)


def test_a_script_creates_an_account_with_the_password_once() -> None:
    display, link = RecordingDisplay(), ScriptedLink()
    session = ClientSession(display, FakePeers(), scripted=True)
    session.link_made(link)
    link.answer(version=2)
    session.line_entered("jaba")
    link.answer(account="new")
    session.line_entered("hutt")
    assert link.sent()[-1] == wire.Password("hutt")


def test_a_server_shutdown_is_one_clear_line(client: Client) -> None:
    client.logged_in()
    client.session.event_received(wire.LoggedOut("shutdown"))
    assert client.display.take() == ["The server ended your session (shutdown)."]
    assert client.display.status == 1


def test_a_secret_typed_ahead_is_only_ever_a_password(client: Client) -> None:
    """A line typed while the server checked the name is used at the Password prompt,
    and dropped (never sent as a name or a command) if another prompt comes."""
    client.session.line_entered("hans")
    client.session.secret_entered("falcon*solo")
    client.link.answer(version=2)
    assert client.link.sent()[-1] == wire.Login("hans")
    client.link.answer(account="existing")
    assert client.link.sent()[-1] == wire.Password("falcon*solo")

    other = Client()
    other.session.line_entered("hans")
    other.session.secret_entered("falcon*solo")
    other.link.answer(version=2)
    other.link.fail("already-online", "hans is online already.")
    assert wire.Login("falcon*solo") not in other.link.sent()  # never a name
    assert other.session.stage is Stage.USERNAME
    assert "(a line typed while the server was checking was not used)" in other.display.lines
    assert not any("falcon" in line for line in other.display.lines)
