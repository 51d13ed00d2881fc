"""Security properties: constant-time token comparison, secrets never in logs or API
answers, XML only through lxml, owner-only database files, loopback by default."""

from __future__ import annotations

import ast
import io
import os
import re
import stat
import tokenize
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.cli.main import cli
from collector.core import wire
from collector.service.config import SECRETS, ServiceConfig
from collector.testing.examples import example_record
from collector.testing.harness import http
from collector.testing.webapp_stub import StubConfig
from devicesim.formats import AppUplink, uplink_body

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "collector"


# --------------------------------------------------------------------------- constant time


def _functions_touching_tokens(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            src = ast.unparse(node)
            if re.search(r"\b(token|tokens|tok|pw|password)\b", src) and "compare_digest" in src:
                yield node


@pytest.mark.parametrize("module", ["service/gate.py", "testing/webapp_stub.py"])
def test_token_checks_use_compare_digest_and_never_plain_equality(module):
    tree = ast.parse((COLLECTOR / module).read_text())
    funcs = list(_functions_touching_tokens(tree))
    assert funcs, f"no token check found in {module}"
    for fn in funcs:
        for node in ast.walk(fn):
            if isinstance(node, ast.Compare):
                text = ast.unparse(node)
                # comparing a secret with ==, != or `in` leaks its length of common prefix in time
                if any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
                    assert not re.search(r"\b(vb|tok|pw|want|t|token|tokens|self\._tokens)\b", text), \
                        f"{module}:{fn.name}: {text}"
    # and nothing anywhere in the package compares a token with == (a later shortcut)
    for path in COLLECTOR.rglob("*.py"):
        src = path.read_text()
        assert not re.search(r"\b\w*token\w*\s*[!=]=\s*\w|\w\s*[!=]=\s*\w*token\b", src.replace("token_hex", "")), \
            path.name


class _Tokens(list):
    """The configured tokens, remembering which ones the check looked at."""

    def __init__(self, tokens: list[bytes]):
        super().__init__(tokens)
        self.looked_at: list[bytes] = []

    def __iter__(self):
        for t in super().__iter__():
            self.looked_at.append(t)
            yield t


@pytest.mark.parametrize("header", ["Bearer tok-a", "Bearer tok-c", "Bearer wrong", "tok-b", None])
def test_service_checks_every_configured_token_without_short_circuit(header):
    """The ingest check compares the presented token with every configured token,
    whichever matched or none: no early return whose timing tells which one did."""
    from aiohttp.test_utils import make_mocked_request

    from collector.service.gate import authorised
    cfg = ServiceConfig(ingest_token=["tok-a", "tok-b", "tok-c"])
    configured = [b"tok-a", b"tok-b", b"tok-c"]
    tokens = _Tokens(configured)
    req = make_mocked_request("POST", "/uplink", headers={"Authorization": header} if header else {})
    ok = authorised(cfg, req, tokens)
    assert ok == (header is not None and header.removeprefix("Bearer ") in ("tok-a", "tok-b", "tok-c"))
    if header is not None:
        assert tokens.looked_at == configured, tokens.looked_at


# --------------------------------------------------------------------------- XML via lxml only


def _string_literals(path: Path):
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    prev = None
    for tok in toks:
        # docstrings (a triple-quoted string statement after a newline/indent) are prose
        docstring = (prev is not None and prev.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL)
                     and tok.string.startswith(('"""', "'''")))
        if tok.type in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)) and not docstring:
            yield tok
        if tok.type not in (tokenize.COMMENT,):
            prev = tok


def test_xml_is_built_only_through_lxml():
    offenders = []
    for path in sorted(COLLECTOR.rglob("*.py")):
        for tok in _string_literals(path):
            if re.search(r"<\s*(\?xml|[A-Za-z][\w:.-]*[\s>/])", tok.string) and "measurement" in tok.string.lower() \
                    or re.search(r"<\?xml|<measurementReport|</", tok.string):
                offenders.append(f"{path.name}:{tok.start[0]}: {tok.string[:60]}")
    assert offenders == [], offenders
    assert "lxml" in (COLLECTOR / "core" / "xmldoc.py").read_text()


def test_the_xml_check_would_catch_a_string_built_document(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text('def doc(k):\n    return f"<measurementReport key={k!r}>"\n')
    assert any("measurementReport" in t.string for t in _string_literals(p))


# --------------------------------------------------------------------------- secrets, files, binding


def test_defaults_bind_to_loopback():
    assert ServiceConfig().host == "127.0.0.1"
    assert StubConfig().host == "127.0.0.1"
    r = CliRunner().invoke(cli, ["webapp-stub", "--help"])
    assert "default: 127.0.0.1" in r.output.replace("\n", " ").replace("  ", " ")


def _listening(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out = set()
    for name in ("tcp", "tcp6"):
        p = Path(f"/proc/net/{name}")
        if not p.exists():
            continue
        for line in p.read_text().splitlines()[1:]:
            parts = line.split()
            addr, prt = parts[1].split(":")
            if int(prt, 16) == port and parts[3] == "0A":
                out.add(addr)
    return out


@pytest.mark.slow
def test_secrets_never_reach_logs_or_answers_and_files_are_private(tmp_path, workloads):
    w = workloads
    secrets = {
        "ingest": "ingest-Zx81-secret-value", "api": "api-Qq55-secret-value", "webapp": "webapp-Kk27-secret-value",
        "password": "password-Pp93-secret-value",
    }
    stub_port = w.free_port()
    stub = w.Proc(w.collector_cmd("webapp-stub", "--port", str(stub_port), "--db", str(tmp_path / "stub.db"),
                                  "--user", f"collector:{secrets['password']}"),
                  tmp_path / "stub.log", f"http://127.0.0.1:{stub_port}/stub/stats")
    (tmp_path / "collector.toml").write_text(
        f'[ingest]\ningest_token = ["{secrets["ingest"]}"]\n[delivery]\nwebapp_password = "{secrets["password"]}"\n')
    port = w.free_port()
    old_umask = os.umask(0o022)
    try:
        stub.start()
        svc = w.Proc(w.collector_cmd("serve", "--config", str(tmp_path / "collector.toml"), "--port", str(port),
                                     "--db", str(tmp_path / "c.db"), "--webapp-url", f"http://127.0.0.1:{stub_port}",
                                     "--webapp-username", "collector", "--log-level", "DEBUG",
                                     "--backoff-base", "0.1", "--backoff-cap", "0.5"),
                     tmp_path / "collector.log", f"http://127.0.0.1:{port}/healthz",
                     env={**os.environ, "COLLECTOR_API_TOKEN": secrets["api"],
                          "COLLECTOR_WEBAPP_TOKEN": secrets["webapp"]})
        svc.start()
        assert _listening(port) == {"0100007F"}, _listening(port)  # 127.0.0.1 only
        assert _listening(stub_port) == {"0100007F"}
        url = f"http://127.0.0.1:{port}"
        ing = {"Authorization": f"Bearer {secrets['ingest']}"}
        api = {"Authorization": f"Bearer {secrets['api']}"}
        answers: list[bytes] = []
        frags = wire.fragment(1, wire.encode_record(example_record()), 115)
        for i, f in enumerate(frags):
            r = http("POST", url + "/uplink", uplink_body("generic", AppUplink("70B3D57ED0C05EC1", 16, i, f,
                                                                                 1_800_000_000 * 10**9))[1], ing)
            assert r.status == 202
            answers.append(r.body)
        # wrong and missing tokens, on ingest and on the API
        for h in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {secrets['webapp']}"}):
            answers.append(http("POST", url + "/uplink", {"devEui": "x"}, h).body)
            answers.append(http("GET", url + "/api/status", None, h).body)
        uid = r.json()["closed"][0]
        w.wait_until(lambda: http("GET", f"{url}/api/messages/{uid}", None, api).json()["delivery"] == "delivered",
                     what="the document delivered through the login flow")
        # a dead letter, so that its record (last response, attempt log) is shown too
        http("POST", f"http://127.0.0.1:{stub_port}/stub/faults", {"reject_status": 403})
        rec = example_record()
        rec.record_seq = 2
        for i, f in enumerate(wire.fragment(2, wire.encode_record(rec), 115)):
            r = http("POST", url + "/uplink", uplink_body("generic", AppUplink("70B3D57ED0C05EC1", 16, 10 + i, f,
                                                                                 1_800_000_000 * 10**9))[1], ing)
        dead = r.json()["closed"][0]
        w.wait_until(lambda: http("GET", f"{url}/api/deadletters", None, api).json()["deadletters"],
                     what="a dead letter")
        for path in ("/api/status", "/api/messages?limit=1000", f"/api/messages/{uid}", f"/api/messages/{dead}",
                     "/api/incidents", "/api/deadletters", f"/api/deadletters/{dead}", "/healthz", "/metrics"):
            r = http("GET", url + path, None, api)
            assert r.status == 200, (path, r)
            answers.append(r.body)
        for args in (["status", "--json"], ["deadletters", "list", "--json"], ["deadletters", "show", dead],
                     ["incidents", "--json"], ["devices", "list"]):
            db_args = ["--db", str(tmp_path / "c.db")]
            cmd = [args[0], *db_args, *args[1:]]
            res = CliRunner().invoke(cli, cmd)
            assert res.exit_code == 0, (cmd, res.output)
            answers.append(res.output.encode())
        assert svc.stop() == 0
    finally:
        os.umask(old_umask)
        stub.stop()
        if svc.popen and svc.popen.poll() is None:
            svc.popen.kill()
    log = (tmp_path / "collector.log").read_text()
    assert "event=login_ok" in log and "event=unauthorised" in log  # the log did see those events
    for name, value in secrets.items():
        assert value not in log, f"the {name} secret is in the log"
        for a in answers:
            assert value.encode() not in a, f"the {name} secret is in an answer: {a[:200]!r}"
    assert set(SECRETS) >= {"ingest_token", "api_token", "webapp_token", "webapp_password"}
    for f in tmp_path.glob("c.db*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f.name, oct(f.stat().st_mode))
    assert stat.S_IMODE((tmp_path / "stub.db").stat().st_mode) == 0o600
