"""Platypush section names land on a section pihub has, or fail saying what to do instead.

Covers the mapping table against the real sections (``pihub.hub.known_sections``), the
two-part MCP3008 / serial sensor setups merged into one section, and every documented
``backend.http`` option (including ``ssl_capath`` and ``run_externally``).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import textwrap
from pathlib import Path

import pytest
from pihub_testing import need_tool

from pihub import config as cfg
from pihub.config.loader import LEGACY_SECTIONS, SPLIT_SECTIONS
from pihub.errors import ConfigError
from pihub.hub import BUILTIN_BACKENDS, ENGINE_SECTIONS, PLUGIN_CLASSES, known_sections
from pihub.web.server import make_ssl_context

SECTIONS = known_sections()


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def load(path: str) -> cfg.Config:
    return cfg.load(path, sections=SECTIONS)


def problems_of(path: str) -> tuple[list[str], list[str]]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return [str(p) for p in info.value.problems], [str(w) for w in info.value.warnings]


# -- the mapping table ------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), sorted(LEGACY_SECTIONS.items()))
def test_every_legacy_name_lands_on_a_real_section_or_says_what_to_do(tmp_path: Path, old: str, new: str) -> None:
    path = write(tmp_path, "c.yaml", f"{old}: {{}}\n")
    try:
        config = load(path)
        errors, warnings = [], [str(w) for w in config.warnings]
    except ConfigError as e:
        errors, warnings = [str(p) for p in e.problems], [str(w) for w in e.warnings]
    if new in SECTIONS:
        assert any(f"platypush section {old!r} is read as {new!r}" in w for w in warnings), warnings
        assert not any("unknown section" in e for e in errors), errors
    else:
        assert errors == [f"{path}:1:1: platypush section {old!r} would be read as {new!r}, but no installed "
                          f"backend provides {new!r}; remove it, or install a package that provides a {new!r} "
                          f"backend"]
        assert not any("rename it" in w for w in warnings), warnings


def test_the_names_pihub_implements_map_to_its_own_sections() -> None:
    own = set(BUILTIN_BACKENDS) | set(PLUGIN_CLASSES) | set(ENGINE_SECTIONS)
    for old in ("backend.http", "backend.sensor.serial", "backend.serial", "backend.sensor.mcp3008",
                "gpio.sensor.mcp3008", "sensor.mcp3008"):
        assert LEGACY_SECTIONS[old] in own, old
    assert LEGACY_SECTIONS["backend.sensor.serial"] == "serial"
    for section, spellings in SPLIT_SECTIONS.items():
        assert section in own and section in spellings
        assert all(LEGACY_SECTIONS.get(s, s) == section for s in spellings)


def test_an_unmapped_backend_sensor_names_the_sensor_sections_pihub_has(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "http: {enabled: false}\nbackend.sensor.dht: {pin: 4}\n")
    errors, warnings = problems_of(path)
    assert errors == [f"{path}:2:1: platypush section 'backend.sensor.dht' has no pihub counterpart: pihub's "
                      f"sensor sections are 'adc' (for 'backend.sensor.mcp3008'), 'serial' (for "
                      f"'backend.sensor.serial'); remove it, or install a package that provides a "
                      f"'sensor.dht' backend"]
    assert warnings == []


def test_without_schemas_legacy_names_are_still_mapped(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "backend.sensor.serial: {device: loop://}\nbackend.midi: {}\n")
    config = cfg.load(path, sections=None)
    assert set(config.sections) == {"serial", "midi"}


# -- the two-part MCP3008 and serial sensor setups --------------------------------------------

PLUGIN_PART = textwrap.dedent("""\
    gpio.sensor.mcp3008:
      spi_port: 0
      spi_device: 1
      Vdd: 3.3
      channels:
        0: {name: light}
        1: {name: temperature, conversion: {scale: 100.0}}
""")
BACKEND_PART = textwrap.dedent("""\
    backend.sensor.mcp3008:
      poll_seconds: 0.5
      thresholds: {light: 2.5}
      tolerance: {temperature: 0.1}
      enabled_sensors: [light, temperature]
""")


def _check_adc(config: cfg.Config) -> None:
    adc = config.sections["adc"]
    assert (adc["bus"], adc["device"], adc["vref"], adc["poll_interval"]) == (0, 1, 3.3, 0.5)
    assert set(adc["channels"]) == {0, 1}
    assert adc["thresholds"] == {"light": 2.5} and adc["enabled_sensors"] == ["light", "temperature"]


def test_mcp3008_plugin_and_backend_in_one_file_merge_into_one_adc(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "http: {enabled: false}\n" + PLUGIN_PART + BACKEND_PART)
    config = load(path)
    _check_adc(config)
    assert not any("defined twice" in str(w) for w in config.warnings)
    # each option is located in the section that wrote it
    assert config.locate(("adc", "thresholds")).line == 11
    assert config.locate(("adc", "Vdd"), at_key=True).line == 5


def test_mcp3008_split_by_include_merges_and_locates_in_each_file(tmp_path: Path) -> None:
    write(tmp_path, "sensors.yaml", BACKEND_PART.replace("poll_seconds: 0.5", "poll_seconds: x"))
    path = write(tmp_path, "c.yaml", "http: {enabled: false}\ninclude: sensors.yaml\n" + PLUGIN_PART)
    errors, _ = problems_of(path)
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'sensors.yaml'}:2:"), errors
    write(tmp_path, "sensors.yaml", BACKEND_PART)
    _check_adc(load(path))


def test_a_conflicting_mcp3008_pair_is_a_located_error_naming_both_places(tmp_path: Path) -> None:
    write(tmp_path, "sensors.yaml", """\
        backend.sensor.mcp3008:
          vref: 5.0
          poll_seconds: 0.5
    """)
    path = write(tmp_path, "c.yaml", "http: {enabled: false}\ninclude: sensors.yaml\n" + PLUGIN_PART)
    errors, _ = problems_of(path)
    assert errors == [f"{path}:6:3: adc.Vdd: 'Vdd' is 3.3 here but 5.0 (as 'vref') in 'backend.sensor.mcp3008' "
                      f"at {tmp_path / 'sensors.yaml'}:2:3; both sections are read as 'adc', so set it in one "
                      f"of them"]


def test_the_same_value_in_both_parts_is_not_a_conflict(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "http: {enabled: false}\n" + PLUGIN_PART
                 + BACKEND_PART.replace("poll_seconds: 0.5", "poll_seconds: 0.5\n  Vdd: 3.3\n  bus: 0"))
    _check_adc(load(path))


def test_a_later_file_replaces_one_part_and_keeps_the_other(tmp_path: Path) -> None:
    write(tmp_path, "old.yaml", PLUGIN_PART + BACKEND_PART.replace("0.5", "9"))
    path = write(tmp_path, "c.yaml", "http: {enabled: false}\ninclude: old.yaml\n" + BACKEND_PART)
    config = load(path)
    _check_adc(config)
    assert any("this later definition replaces it" in str(w) for w in config.warnings)


def test_a_part_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "http: {enabled: false}\n" + PLUGIN_PART + "backend.sensor.mcp3008: 5\n")
    errors, _ = problems_of(path)
    assert errors == [f"{path}:9:25: adc: must be a mapping of options, not 5"]


def test_serial_plugin_and_backend_sensor_serial_merge(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", """\
        http: {enabled: false}
        serial: {device: "loop://", baud_rate: 115200}
        backend.sensor.serial:
          thresholds: {temperature: 25}
          poll_seconds: 1
    """)
    config = load(path)
    serial = config.sections["serial"]
    assert serial["device"] == "loop://" and serial["baud_rate"] == 115200
    assert serial["thresholds"] == {"temperature": 25}


def test_two_spellings_of_a_section_that_is_not_split_are_still_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "backend.http: {}\nhttp: {}\n")
    errors, _ = problems_of(path)
    assert errors == [f"{path}:2:1: http: 'http' is defined twice in this file, also as 'backend.http' at line 1, "
                      f"col 1"]


# -- backend.http ------------------------------------------------------------------------------

#: Every option Platypush documents for backend.http (0.x and 1.x) and what pihub says.
HTTP_WARNINGS = {
    "uwsgi_args": "pihub does not use uWSGI",
    "maps": "no /map page",
    "dashboard": "no dashboard widgets",
    "redis_queue": "no Redis",
    "poll_seconds": "does not poll",
    "secret_key_file": "ignored",
    "use_werkzeug_server": "ignored",
    "zeroconf_enabled": "ignored",
    "bind_socket": "UNIX sockets are not supported",
    "num_workers": "renamed to 'threads'",
}


def test_every_documented_backend_http_key_loads(tmp_path: Path) -> None:
    (tmp_path / "ca.d").mkdir()
    path = write(tmp_path, "c.yaml", f"""\
        backend.http:
          port: 8008
          websocket_port: 8009
          bind_address: 0.0.0.0
          disable_websocket: false
          resource_dirs: {{pics: {tmp_path}}}
          ssl_cert: /etc/ssl/cert.pem
          ssl_key: /etc/ssl/key.pem
          ssl_cafile: /etc/ssl/ca.pem
          ssl_capath: {tmp_path / 'ca.d'}
          run_externally: true
          uwsgi_args: ['--plugin', 'python', '--http-socket', ':8008']
          maps: {{api_key: x}}
          dashboard: {{widgets: {{}}}}
          redis_queue: platypush/http
          poll_seconds: 1
          secret_key_file: ~/.local/share/platypush/flask.secret.key
          use_werkzeug_server: false
          zeroconf_enabled: true
          bind_socket: /tmp/platypush.sock
          num_workers: 4
    """)
    config = load(path)
    http = config.sections["http"]
    assert http["run_externally"] is True and http["ssl_capath"] == str(tmp_path / "ca.d")
    assert http["threads"] == 4 and http["ssl_cafile"] == "/etc/ssl/ca.pem"
    warnings = [str(w) for w in config.warnings]
    for key, says in HTTP_WARNINGS.items():
        assert any(f"{key!r}" in w and says in w for w in warnings), (key, warnings)
    assert len(warnings) == len(HTTP_WARNINGS) + 1  # + the section rename


def test_run_externally_binds_no_http_port_and_the_app_serves_elsewhere(make_hub) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = make_hub(f"http: {{run_externally: true, port: {port}, disable_websocket: true}}\nmock: {{}}\n")
    assert hub.started and hub.web is None
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    from pihub.web.app import make_app

    app = make_app(hub)
    status: list[str] = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/livez", "SERVER_NAME": "x", "SERVER_PORT": "80",
                         "wsgi.url_scheme": "http", "wsgi.input": None},
                        lambda s, h, exc=None: status.append(s)))
    assert status == ["200 OK"] and body


# -- ssl_capath ---------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA in a rehashed directory, a server and a client certificate it signed, a rogue client."""
    need_tool(shutil.which("openssl") is not None, "openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN=pihub {ca}", cwd=d)
    (d / "server.ext").write_text("extendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who, ca in (("server", "ca"), ("client", "ca"), ("stranger", "rogue")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", f"/CN={who}", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile",
                 "server.ext" if who == "server" else "client.ext", cwd=d)
    (d / "ca.d").mkdir()
    shutil.copy(d / "ca.pem", d / "ca.d" / "ca.pem")
    _openssl("rehash", "ca.d", cwd=d)
    return d


def _handshake(server_ctx: ssl.SSLContext, pki: Path, client: str | None) -> None:
    """Run a TLS handshake in memory; raise the server's ssl.SSLError when it refuses."""
    client_ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client_ctx.check_hostname = False
    if client:
        client_ctx.load_cert_chain(str(pki / f"{client}.pem"), str(pki / f"{client}.key"))
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    tls = client_ctx.wrap_bio(c_in, c_out)
    done = {"server": False, "client": False}
    for _ in range(10):
        for name, end, out, peer in (("client", tls, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_ssl_capath_requires_a_client_certificate_from_a_ca_in_the_directory(pki: Path) -> None:
    ctx = make_ssl_context(str(pki / "server.pem"), str(pki / "server.key"), capath=str(pki / "ca.d"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    _handshake(ctx, pki, "client")
    with pytest.raises(ssl.SSLError):
        _handshake(ctx, pki, None)
    with pytest.raises(ssl.SSLError):
        _handshake(ctx, pki, "stranger")


def test_ssl_capath_that_cannot_verify_anything_is_refused(pki: Path, tmp_path: Path) -> None:
    cert, key = str(pki / "server.pem"), str(pki / "server.key")
    with pytest.raises(FileNotFoundError, match="http.ssl_capath"):
        make_ssl_context(cert, key, capath=str(tmp_path / "missing"))
    (tmp_path / "plain").mkdir()
    shutil.copy(pki / "ca.pem", tmp_path / "plain" / "ca.pem")  # not rehashed
    with pytest.raises(ValueError, match="openssl rehash"):
        make_ssl_context(cert, key, capath=str(tmp_path / "plain"))
