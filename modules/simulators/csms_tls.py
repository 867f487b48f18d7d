"""A throw-away PKI for security profile 2 (TLS with a server certificate): a test CA that
a station trusts through its ``ca_file``, and a server certificate for the loopback names."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TestPki:
    __test__ = False  # a name pytest would otherwise try to collect

    ca_file: Path
    server_pem: Path  # server key and certificate chain, for tools other than DemoCsms
    server_context: ssl.SSLContext

    def client_context(self) -> ssl.SSLContext:
        """What a station that trusts the test CA uses."""
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))


def make_test_pki(directory: Path) -> TestPki:
    """Write ``csms-ca.pem`` and ``csms-server.pem`` into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="everkit demo CSMS")
    server = ca.issue_cert(*SERVER_NAMES)
    ca_file = directory / "csms-ca.pem"
    server_pem = directory / "csms-server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(server_pem))
    return TestPki(ca_file=ca_file, server_pem=server_pem, server_context=context)
