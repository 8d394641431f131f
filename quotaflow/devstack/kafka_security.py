"""SASL_SSL for the local Apache Kafka cluster, as users meet it on Strimzi, MSK or Confluent:
TLS from a certificate authority of its own (made with the JDK's `keytool` at the first start,
so nothing beyond Java is needed), SCRAM-SHA-512 users with random passwords, and ACLs, so each
function can be given only its own topics and consumer group.

Everything lives in one folder, created once and read back on later starts: `ca.pem` (what a
client trusts: librdkafka's `ssl.ca.location`), `broker.p12` (the brokers' key and certificate,
for 127.0.0.1 and localhost) and `credentials.json` (the keystore's and each user's password;
readable by its owner only).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from quotaflow.devstack.process import DevStackError

MECHANISM = "SCRAM-SHA-512"
# The brokers' own user: they authenticate to each other with it, and it may do anything.
ADMIN = "admin"


@dataclass(frozen=True)
class LocalSecurity:
    folder: Path
    keystore_password: str
    users: dict[str, str]  # name -> password, ADMIN included

    @property
    def ca_pem(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.p12"

    @classmethod
    def create(cls, folder: Path, users: Iterable[str] = ()) -> LocalSecurity:
        """The security material in `folder`: read back if there, else made now (a CA, the
        brokers' certificate signed by it, a password for ADMIN and each of `users`)."""
        creds = folder / "credentials.json"
        if creds.exists():
            saved = json.loads(creds.read_text())
            return cls(folder, saved["keystore_password"], saved["users"])
        folder.mkdir(parents=True, exist_ok=True)
        made = cls(folder, secrets.token_urlsafe(18),
                   {name: secrets.token_urlsafe(18) for name in (ADMIN, *users)})
        made._make_certificates()
        creds.write_text(json.dumps({"keystore_password": made.keystore_password,
                                     "users": made.users}, indent=2))
        creds.chmod(0o600)
        return made

    def _make_certificates(self) -> None:
        keytool = shutil.which("keytool")
        if keytool is None:
            raise DevStackError("SASL_SSL needs the JDK's keytool to make certificates")
        pw = self.keystore_password
        ca_store, csr, signed = (self.folder / n for n in ("ca.p12", "broker.csr", "broker.pem"))

        def run(*args: str) -> None:
            done = subprocess.run([keytool, *args], capture_output=True, text=True)
            if done.returncode != 0:
                raise DevStackError(f"keytool {args[0]} failed: {done.stdout}{done.stderr}")

        common = ["-storetype", "PKCS12", "-storepass", pw, "-keypass", pw]
        # The certificate authority, valid for ten years (a local cluster's lifetime).
        run("-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity",
            "3650", "-dname", "CN=quotaflow local CA", "-ext", "bc:c", "-keystore",
            str(ca_store), *common)
        run("-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), "-storepass", pw,
            "-file", str(self.ca_pem))
        # The brokers' key; its certificate names the address clients dial (librdkafka checks
        # the host name: ssl.endpoint.identification.algorithm=https).
        run("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
            "-validity", "3650", "-dname", "CN=localhost", "-keystore", str(self.keystore),
            *common)
        run("-certreq", "-alias", "broker", "-keystore", str(self.keystore), "-storepass", pw,
            "-file", str(csr))
        run("-gencert", "-alias", "ca", "-keystore", str(ca_store), "-storepass", pw, "-rfc",
            "-infile", str(csr), "-outfile", str(signed), "-validity", "3650",
            "-ext", "SAN=ip:127.0.0.1,dns:localhost")
        # The chain back into the brokers' store; it is their truststore too (they are each
        # other's clients), which trusts the CA entry.
        run("-importcert", "-noprompt", "-alias", "ca", "-file", str(self.ca_pem),
            "-keystore", str(self.keystore), "-storepass", pw)
        run("-importcert", "-alias", "broker", "-file", str(signed), "-keystore",
            str(self.keystore), "-storepass", pw)
        for leftover in (csr, signed):
            leftover.unlink()
        ca_store.chmod(0o600)
        self.keystore.chmod(0o600)

    def scram_format_args(self) -> list[str]:
        """`kafka.tools.StorageTool format` arguments that create every user: SCRAM users
        written into the metadata log before the first start, so the brokers' own user exists
        before they need it to reach each other."""
        return [arg for name, pw in self.users.items()
                for arg in ("--add-scram", f"{MECHANISM}=[name={name},password={pw}]")]

    def broker_properties(self) -> dict[str, str]:
        """The brokers' TLS, SASL and authorizer settings (listener SASL_SSL)."""
        admin_pw = self.users[ADMIN]
        return {
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN}" password="{admin_pw}";',
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(self.keystore),
            "ssl.truststore.password": self.keystore_password,
            "authorizer.class.name":
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controllers' listener stays PLAINTEXT on 127.0.0.1, where the nodes reach
            # each other's quorum as ANONYMOUS; no client can be ANONYMOUS (the only client
            # listener is SASL_SSL).
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def client_config(self, user: str) -> dict[str, str]:
        """librdkafka's settings for `user` (KAFKA_<PROPERTY> in quotaflow's environment)."""
        return {"security.protocol": "SASL_SSL", "sasl.mechanisms": MECHANISM,
                "sasl.username": user, "sasl.password": self.users[user],
                "ssl.ca.location": str(self.ca_pem)}


def grant(config: dict[str, str | int | float | bool], user: str, reads: Iterable[str] = (),
          writes: Iterable[str] = (), groups: Iterable[str] = (), timeout_s: float = 30) -> None:
    """Allow `user` to read and describe `reads`, write and describe `writes`, and join
    `groups`, on the cluster an admin reaches with `config`; nothing else is allowed it (no
    ACL, no access)."""
    principal = f"User:{user}"

    def acl(kind: ResourceType, name: str, op: AclOperation) -> AclBinding:
        return AclBinding(kind, name, ResourcePatternType.LITERAL, principal, "*", op,
                          AclPermissionType.ALLOW)

    acls = ([acl(ResourceType.TOPIC, t, op) for t in reads
             for op in (AclOperation.READ, AclOperation.DESCRIBE)]
            + [acl(ResourceType.TOPIC, t, op) for t in writes
               for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
            + [acl(ResourceType.GROUP, g, AclOperation.READ) for g in groups])
    acls = list(dict.fromkeys(acls))  # a topic both read and written: one DESCRIBE
    if acls:
        admin = AdminClient({**config, "log_level": 0})
        for future in admin.create_acls(acls, request_timeout=timeout_s).values():
            future.result()


def owner_only(path: Path) -> bool:
    """True if only its owner can read `path` (credentials must not be world-readable)."""
    return os.stat(path).st_mode & 0o077 == 0
