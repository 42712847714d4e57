"""The tests' fakes provide what they stand in for: mypy checks each against its typed
Protocol (the assignments below), zope's verifyObject against its interface."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint, IStreamServerEndpoint
from zope.interface.verify import verifyObject

from tests.fakes import FakePeers, RecordingDisplay, ScriptedLink
from tests.harness import Server
from tests.memnet import MemoryNetwork
from tests.test_server_durability import SlowMailbox
from tests.test_service import ControlledEndpoint
from twisted_chat.client.seams import Display, Link, PeerNetwork
from twisted_chat.interfaces import IMailbox


def test_client_fakes_have_the_shape_of_what_they_replace() -> None:
    display: Display = RecordingDisplay()
    link: Link = ScriptedLink()
    peers: PeerNetwork = FakePeers()
    for fake, protocol in ((display, Display), (link, Link), (peers, PeerNetwork)):
        missing = {
            name
            for name in vars(protocol)
            if not name.startswith("_") and callable(vars(protocol)[name])
        } - set(dir(fake))
        assert not missing, f"{type(fake).__name__} lacks {missing}"


def test_server_side_fakes_provide_their_interfaces(tmp_path: Path) -> None:
    assert verifyObject(IMailbox, SlowMailbox([]))
    assert verifyObject(IStreamServerEndpoint, ControlledEndpoint())
    network = MemoryNetwork(Server(tmp_path))
    assert verifyObject(IStreamServerEndpoint, network.listen_on("127.0.0.1"))
    assert verifyObject(IStreamClientEndpoint, network.connect_to("127.0.0.1", 1))
    port = network.listen_on("127.0.0.1").listen(None)  # type: ignore[arg-type]
    assert verifyObject(IListeningPort, port.result)
