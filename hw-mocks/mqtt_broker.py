"""A private Mosquitto broker for tests, benchmarks and the demo: password file, ACL, TLS.

    python hw-mocks/mqtt_broker.py [--dir DIR] [--port N] [--tls-port N] [--user NAME:PASSWORD ...]

starts Debian's ``mosquitto`` (apt ``mosquitto``; ``mosquitto_passwd`` comes with it) in
the foreground on 127.0.0.1 with two listeners: plain MQTT on ``--port`` and TLS on
``--tls-port`` (a throwaway CA made with ``openssl``; its ``ca.pem`` is in ``--dir``).
Anonymous clients are refused; every ``--user`` gets a password; the ACL (:data:`ACL`)
names users after device ids and lets each publish requests under
``platypush_bus_mq/+/from/<its own name>`` only (what pihub's ``trusted_users`` relies on). Ports default to free ones;
what it chose is printed as one JSON line. Ctrl-C stops it.

From Python: ``with Broker(tmpdir, users={"a": "pw"}) as broker: broker.port, broker.tls_port,
broker.ca_file, broker.restart()``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

# child_server.py lies beside this file; put its folder on the path however this file is
# loaded (run as a script, or by path from the tests and benchmarks)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from child_server import ChildServer, free_port  # noqa: E402

#: the ACL, as a house of pihubs would deploy it (each broker user is named after its
#: device id): a device reads only its own request topics (the tokens in requests stay
#: between sender and target), may publish requests under ``from/<its own name>`` only
#: (what ``trusted_users`` relies on), answers only on its own response topics; topics
#: under home/, test/, bench/, homeassistant/ and pihub/ (HA's state and command topics) are
#: free for all (a real broker lets only HA's user publish on pihub/+/+/+/set).
ACL = """\
pattern read platypush_bus_mq/%u
pattern read platypush_bus_mq/%u/from/+
pattern write platypush_bus_mq/+
pattern write platypush_bus_mq/+/from/%u
pattern write platypush_bus_mq/%u/responses/+
pattern read platypush_bus_mq/+/responses/+
pattern readwrite home/#
pattern readwrite test/#
pattern readwrite bench/#
pattern readwrite homeassistant/#
pattern readwrite pihub/#
"""


def make_ca(directory: Path, name: str, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``host`` signed by it (openssl).

    Returns:
        ``(ca.pem, server.pem, server.key)`` in ``directory`` (named after ``name``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / f"{name}-ca.key", directory / f"{name}-ca.pem"
    key, csr, crt = directory / f"{name}-server.key", directory / f"{name}-server.csr", directory / f"{name}-server.pem"
    ext = directory / f"{name}-ext.cnf"
    ext.write_text(f"subjectAltName=IP:{host},DNS:localhost\n", encoding="utf-8")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
        "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
        "-extfile", str(ext), "-out", str(crt))
    return ca, crt, key


class Broker(ChildServer):
    """One mosquitto process with a password file, the :data:`ACL` and a TLS listener.

    Args:
        directory: where its files go (config, passwords, ACL, certificates).
        users: user name -> password.
        port, tls_port: 0 picks free ports.
        tls: add the TLS listener.
    """

    def __init__(self, directory: str | os.PathLike[str], users: Mapping[str, str], *, port: int = 0,
                 tls_port: int = 0, tls: bool = True) -> None:
        for tool in ("mosquitto", "mosquitto_passwd") + (("openssl",) if tls else ()):
            if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
                raise FileNotFoundError(f"{tool} is not installed (apt-get install mosquitto openssl)")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        self.port = port or free_port()
        self.tls_port = (tls_port or free_port()) if tls else 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = self.dir / "mosquitto.log"
        passwd = self.dir / "passwd"
        passwd.unlink(missing_ok=True)
        for i, (user, password) in enumerate(self.users.items()):
            subprocess.run([_tool("mosquitto_passwd"), *(["-c"] if i == 0 else []), "-b", str(passwd), user, password],
                           check=True, capture_output=True)
        if not self.users:
            passwd.write_text("", encoding="utf-8")
        (self.dir / "acl").write_text(ACL, encoding="utf-8")
        lines = [
            # as root mosquitto drops to user mosquitto, which cannot read a private temp
            # dir; staying root keeps the files private (non-root: no effect)
            "user root" if os.geteuid() == 0 else "",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {self.dir / 'acl'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]
        self.ca_file: Path | None = None
        if tls:
            self.ca_file, cert, key = make_ca(self.dir, "broker")
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.ca_file}", f"certfile {cert}",
                      f"keyfile {key}"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    label = "mosquitto"

    def command(self) -> list[str]:
        return [_tool("mosquitto"), "-c", str(self.conf)]

    def ports(self) -> list[int]:
        return [self.port, self.tls_port] if self.tls_port else [self.port]


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="where the broker's files go (default: a new temp dir)")
    ap.add_argument("--port", type=int, default=0, help="plain MQTT port (default: a free one)")
    ap.add_argument("--tls-port", type=int, default=0, help="TLS port (default: a free one)")
    ap.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                    help="a broker user (repeatable; default pihub:pihub)")
    args = ap.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user) if args.user else {"pihub": "pihub"}
    directory = args.dir or tempfile.mkdtemp(prefix="pihub-mqtt-")
    broker = Broker(directory, users, port=args.port, tls_port=args.tls_port).start()
    print(json.dumps({"host": "127.0.0.1", "port": broker.port, "tls_port": broker.tls_port,
                      "ca_file": str(broker.ca_file), "users": sorted(users), "dir": directory}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        assert broker.proc is not None
        broker.proc.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
