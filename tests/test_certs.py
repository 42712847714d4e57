"""chat-make-cert and the certificates it makes: the key is the owner's only, the
certificate names what clients dial, and its fingerprint is what peers pin."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from twisted_chat.certs import fingerprint_of_pem, is_fingerprint, run, self_signed


def test_chat_make_cert_writes_a_private_key_and_a_certificate_for_the_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    run(["--name", "chat.example", "--name", "192.0.2.7", "--key", str(key), "--cert", str(cert)])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["chat.example"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7")]
    fingerprint = fingerprint_of_pem(cert.read_bytes())
    assert f"fingerprint sha256:{fingerprint}" in capsys.readouterr().out


def test_fingerprints_are_sha256_hex_and_differ_per_identity() -> None:
    one, two = self_signed([]), self_signed([])
    assert is_fingerprint(one.fingerprint) and is_fingerprint(two.fingerprint)
    assert one.fingerprint != two.fingerprint
    assert not is_fingerprint(one.fingerprint.upper())
    assert not is_fingerprint(one.fingerprint[:-1])


def test_chat_make_cert_refuses_a_silly_validity(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run(["--days", "0", "--key", str(tmp_path / "k"), "--cert", str(tmp_path / "c")])


def test_chat_make_cert_never_replaces_a_key_or_certificate_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    files = ["--key", str(key), "--cert", str(cert)]
    run(files)
    before = key.read_bytes(), cert.read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run(files)
    assert exited.value.code == 2
    said = capsys.readouterr().err
    assert "key.pem and" in said and "cert.pem exist:" in said and "--force" in said
    assert (key.read_bytes(), cert.read_bytes()) == before  # a running server's are safe
    cert.unlink()
    with pytest.raises(SystemExit):
        run(files)  # the key alone is enough to refuse
    run([*files, "--force"])
    assert key.read_bytes() != before[0]
