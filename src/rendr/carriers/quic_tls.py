"""TLS for the ``quic`` carrier: the qh3 client and server configurations, the
self-signed development certificate, and the channel binding of a QUIC path (the
SHA-256 of the server's leaf certificate, mixed into rendr's handshake)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import ssl
from collections.abc import Sequence

from qh3.quic.configuration import QuicConfiguration
from qh3.tls import load_pem_private_key, load_pem_x509_certificates

from ..errors import HandshakeError

__all__ = [
    "ACTIVE_CIDS",
    "ALPN",
    "IDLE_TIMEOUT",
    "MAX_DATAGRAM_FRAME",
    "MAX_DATAGRAM_SIZE",
    "certificate_binding",
    "check_certificate",
    "client_configuration",
    "development_certificate",
    "flag",
    "is_ip",
    "parse_pin",
    "server_configuration",
]

logger = logging.getLogger("rendr.carriers.quic")

ALPN = "rendr/1"
"""The ALPN protocol both ends offer."""
IDLE_TIMEOUT = 120.0
"""QUIC's idle timeout, seconds: above rendr's largest migration budget (90 s)."""
MAX_DATAGRAM_SIZE = 1280
"""QUIC packets are at most this many bytes of UDP payload (fits any IPv6 path)."""
MAX_DATAGRAM_FRAME = 65536
"""The DATAGRAM frame size both ends advertise (RFC 9221 ``max_datagram_frame_size``)."""
ACTIVE_CIDS = 8
"""Connection IDs the server may keep issued to a dialer (spares for rebinds)."""


def certificate_binding(der: bytes) -> bytes:
    """The channel binding of a QUIC path (:attr:`Carrier.binding`): SHA-256 of the
    server's leaf certificate, DER-encoded."""
    return hashlib.sha256(der).digest()


def parse_pin(pin: str) -> bytes:
    """A certificate pin: the SHA-256 of the server's leaf certificate (DER), as 64
    hex digits (colons allowed), i.e. the path's :attr:`Carrier.binding`.

    Raises:
        ValueError: not 32 bytes of hex.
    """
    raw = bytes.fromhex(pin.replace(":", "").strip())
    if len(raw) != 32:
        raise ValueError("a QUIC pin is the SHA-256 of the certificate (64 hex digits)")
    return raw


def check_certificate(config: QuicConfiguration, binding: bytes, pin: str | None) -> bool:
    """After the QUIC handshake of a dialed path: whether its certificate was verified
    (:attr:`Carrier.verified`): against the pin if there is one, else by the CA check
    (not with ``insecure``).

    Raises:
        HandshakeError: the certificate is not the pinned one.
    """
    if pin is not None:
        if binding != parse_pin(pin):
            raise HandshakeError("QUIC certificate does not match the pin "
                                 f"(its SHA-256 is {binding.hex()})")
        return True
    return bool(binding) and config.verify_mode != ssl.CERT_NONE


def client_configuration(server_name: str | None = None, ca: str | None = None,
                         insecure: bool = False, alpn: str | None = None,
                         idle_timeout: float = IDLE_TIMEOUT, pin: str | None = None
                         ) -> QuicConfiguration:
    """The qh3 client configuration of a dialed QUIC path.

    Args:
        server_name: the name the server's certificate must carry (and SNI).
        ca: a PEM file of the certificate authorities to trust (default: the
            system's).
        insecure: accept any certificate (development only: rendr then encrypts its
            records on the path itself, but without a psk or server key an attacker
            in the middle can still run two handshakes, one per side).
        alpn: the ALPN protocol to offer instead of :data:`ALPN`.
        idle_timeout: QUIC's idle timeout, seconds.
        pin: accept exactly the certificate of this SHA-256 (:func:`parse_pin`; the
            CA chain and name are then not checked): self-signed certificates.
    """
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn or ALPN],
                               idle_timeout=idle_timeout, server_name=server_name,
                               max_datagram_size=MAX_DATAGRAM_SIZE,
                               max_datagram_frame_size=MAX_DATAGRAM_FRAME,
                               active_connection_id_limit=ACTIVE_CIDS)
    if insecure or pin is not None:
        if pin is not None:
            parse_pin(pin)  # a malformed pin fails before any packet is sent
        config.verify_mode = ssl.CERT_NONE
    if ca:
        config.load_verify_locations(cafile=ca)
    return config


def server_configuration(tls: str | tuple[str, str] | None = None, *,
                         certfile: str | None = None, keyfile: str | None = None,
                         alpn: str | None = None,
                         idle_timeout: float = IDLE_TIMEOUT) -> QuicConfiguration:
    """The qh3 server configuration of a QUIC listener.

    Args:
        tls: a PEM file holding the certificate chain and its key, or a
            ``(certfile, keyfile)`` pair; None (and no ``certfile``): a self-signed
            development certificate (:func:`development_certificate`), logged as a
            warning.
        certfile, keyfile: the same as separate options (for ``ListenSpec``).
        alpn: the ALPN protocol to accept instead of :data:`ALPN`.
        idle_timeout: QUIC's idle timeout, seconds.
    """
    config = QuicConfiguration(is_client=False, alpn_protocols=[alpn or ALPN],
                               idle_timeout=idle_timeout,
                               max_datagram_size=MAX_DATAGRAM_SIZE,
                               max_datagram_frame_size=MAX_DATAGRAM_FRAME)
    if isinstance(tls, tuple):
        certfile, keyfile = tls
    elif tls is not None:
        certfile = tls
    if certfile is None:
        cert_pem, key_pem = development_certificate()
        logger.warning("QUIC listener uses a self-signed development certificate: "
                       "dialers must pass insecure=True (anyone in the middle could "
                       "impersonate it); give tls=(certfile, keyfile) in production")
        config.certificate = load_pem_x509_certificates(cert_pem)[0]
        config.private_key = load_pem_private_key(key_pem)
    else:
        config.load_cert_chain(certfile, keyfile)
    return config


def development_certificate(names: Sequence[str] = ("localhost", "127.0.0.1", "::1")
                            ) -> tuple[bytes, bytes]:
    """A fresh self-signed EC P-256 certificate for ``names`` (valid 30 days), and its
    key: ``(cert_pem, key_pem)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rendr development")])
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def flag(value: object) -> bool:
    """A boolean option, given as a bool or as text (PathSpec options are text)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address (not a name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
