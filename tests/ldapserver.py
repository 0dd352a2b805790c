"""A real OpenLDAP server (Debian's ``slapd``) for the directory tests.

:class:`LDAPServer` writes its own ``slapd.conf`` (mdb backend, the stock core, cosine,
inetorgperson and nis schemas), seeds the database offline with ``slapadd`` and starts
``slapd -f`` on free loopback ports: ``ldap://`` (StartTLS) and ``ldaps://``, with a
certificate from a throw-away CA made here. It owns its config, data directory and pid
file, so it runs beside a system slapd (the package's own instance listens on 389 with
/etc/ldap/slapd.d; neither touches the other).

Entries live under ``dc=shipyard,dc=test``: people in ``ou=people`` (``inetOrgPerson``
with ``uid`` and a salted SHA password), groups in ``ou=groups`` (``groupOfNames``;
every group also lists ``cn=nobody`` because the schema wants at least one member, which
lets a test remove the last real member). Bound users may read the tree; nobody may read
``userPassword``; anonymous clients may only bind. ``cn=reader`` is the search-bind
account Active Directory setups use.

Changes during a test (remove a user from a group) go through the server's protocol as
its root DN with ldap3, as an administrator's tool would.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .hubtools import free_port, wait_for

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

SUFFIX = "dc=shipyard,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
READER_DN = f"cn=reader,{SUFFIX}"
NOBODY_DN = f"cn=nobody,{SUFFIX}"


def available() -> str | None:
    """None when slapd can be run here, else why not (for a skip message)."""
    for tool in (SLAPD, SLAPADD):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing: apt-get install slapd (make test installs it)"
    if not (MODULE_DIR / "back_mdb.la").exists() and not list(MODULE_DIR.glob("back_mdb*")):
        return f"slapd's mdb backend is missing from {MODULE_DIR}"
    return None


def ssha(password: str) -> str:
    """``userPassword`` as slapd stores it by default: {SSHA} = sha1(password + salt) + salt."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - slapd's scheme
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1; returns (ca, cert, key) PEM paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Shipyard test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


@dataclass
class LDAPServer:
    """One slapd with its own config and data under ``directory``.

    ``users`` maps uid -> password; ``groups`` maps cn -> member uids.
    """

    directory: Path
    users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    reader_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    root_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def __post_init__(self):
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self.ca_file = self.cert_file = self.key_file = None

    # ------------------------------------------------------------ set-up

    def config(self) -> str:
        schemas = "\n".join(
            f"include {SCHEMA_DIR / name}.schema"
            for name in ("core", "cosine", "inetorgperson", "nis")
        )
        return f"""{schemas}
modulepath {MODULE_DIR}
moduleload back_mdb
pidfile {self.directory}/slapd.pid
argsfile {self.directory}/slapd.args
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {self.cert_file}
TLSCertificateKeyFile {self.key_file}

database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ssha(self.root_password)}
directory {self.directory}/data
index objectClass eq
index uid,cn,member eq

access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by users read
    by * none
"""

    def seed(self) -> str:
        """The initial entries as LDIF."""
        entries = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
            "dc: shipyard\no: Shipyard tests",
            f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
            f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
            f"dn: {NOBODY_DN}\nobjectClass: organizationalRole\ncn: nobody",
            f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
            f"cn: reader\nuserPassword: {ssha(self.reader_password)}",
        ]
        for uid, password in self.users.items():
            entries.append(
                f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
                f"sn: {uid}\nmail: {uid}@shipyard.test\nuserPassword: {ssha(password)}"
            )
        for cn, members in self.groups.items():
            lines = [f"dn: {group_dn(cn)}", "objectClass: groupOfNames", f"cn: {cn}"]
            lines += [f"member: {dn}" for dn in [NOBODY_DN, *map(user_dn, members)]]
            entries.append("\n".join(lines))
        return "\n\n".join(entries) + "\n"

    def start(self, timeout: float = 30) -> LDAPServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        self.ca_file, self.cert_file, self.key_file = make_tls(self.directory)
        conf = self.directory / "slapd.conf"
        conf.write_text(self.config())
        ldif = self.directory / "seed.ldif"
        ldif.write_text(self.seed())
        subprocess.run(
            [SLAPADD, "-q", "-f", str(conf), "-l", str(ldif)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.log_path = self.directory / "slapd.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # -d 0: stay in the foreground (a child the tests can stop) and log nothing extra
        self.proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(conf), "-h", f"{self.url}/ {self.ldaps_url}/"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"slapd exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                self.connection().unbind()
                return True
            except Exception:
                return False

        wait_for(up, timeout, 0.1, "slapd to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        shutil.rmtree(self.directory / "data", ignore_errors=True)

    # ------------------------------------------------------- administration

    def connection(self):
        """An ldap3 connection bound as the root DN (plain LDAP on loopback)."""
        import ldap3

        server = ldap3.Server("127.0.0.1", port=self.port, connect_timeout=5)
        return ldap3.Connection(
            server, user=ROOT_DN, password=self.root_password, auto_bind=True, receive_timeout=10
        )

    def _modify_members(self, group: str, uid: str, op) -> None:
        conn = self.connection()
        try:
            ok = conn.modify(group_dn(group), {"member": [(op, [user_dn(uid)])]})
            assert ok, conn.result
        finally:
            conn.unbind()

    def remove_member(self, group: str, uid: str) -> None:
        import ldap3

        self._modify_members(group, uid, ldap3.MODIFY_DELETE)

    def add_member(self, group: str, uid: str) -> None:
        import ldap3

        self._modify_members(group, uid, ldap3.MODIFY_ADD)

    def delete_user(self, uid: str) -> None:
        conn = self.connection()
        try:
            assert conn.delete(user_dn(uid)), conn.result
        finally:
            conn.unbind()
