"""``collector`` commands that run and operate the service: ``serve``, ``status``,
``incidents``, ``deadletters``, ``devices`` and ``webapp-stub``.

Registered on the ``collector`` group by :func:`register`. The operating commands
work on the same database file as a running service (SQLite WAL allows it).

A little over 400 lines: one click command per operator task, each short; they share
the database-opening and output helpers at the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from collector.cli.repair_cmds import repair_lines
from collector.service import outbox
from collector.service.config import FIELDS, LOG_LEVELS, ServiceConfig, load_config, unknown_env
from collector.service.integrity import DatabaseUnusable, open_store
from collector.service.registry import check_eui, check_token, load_file
from collector.service.store import Store, op_device, op_device_remove, op_retry_dead

_HELP = {
    "host": "Address to listen on.",
    "port": "Port to listen on (0: any free port).",
    "db": "SQLite database file (created owner-only).",
    "ingest_token": "Token accepted on every ingest route (repeatable).",
    "ttn_token": "Token accepted on /uplink/ttn only (repeatable).",
    "chirpstack_token": "Token accepted on /uplink/chirpstack only (repeatable).",
    "generic_token": "Token accepted on /uplink only (repeatable).",
    "auth_header": "Header carrying the ingest token (Authorization: Bearer <token>, or a custom header).",
    "allow_anonymous": "Accept ingest without a token when none is configured.",
    "api_token": "Token for /api and /admin (default: the ingest tokens).",
    "body_limit": "Largest accepted request body, bytes (413 above).",
    "message_timeout": "Seconds a message waits for its fragments (at least, with adaptive).",
    "deadline_policy": "fixed: close exactly --message-timeout after the first fragment; "
                       "adaptive: allow longer for slow data rates and duty cycles.",
    "repair_hold": "adaptive: seconds after its first fragment an open v2 message is held at most while its "
                   "device may still send the rows the collector asks for.",
    "webapp_url": "Base URL of the Web App (empty: do not deliver).",
    "webapp_token": "The collector's upload token (used for devices without their own).",
    "webapp_username": "Log in with this user to obtain the upload token.",
    "webapp_password": "Password for --webapp-username.",
    "max_age": "Seconds a document is retried before it is dead-lettered.",
    "delivery_concurrency": "Uploads in flight at most.",
    "devices_file": "Device registry file (TOML or CSV) imported at start.",
    "clock": "system, or manual: virtual time moved by POST /admin/clock (tests and scenarios).",
    "clock_start": "Start of the manual clock, Unix seconds.",
    "retention": "Seconds after which delivered documents and fragments are pruned.",
    "seed": "Seed of the delivery jitter stream.",
    "max_retry_after": "Longest wait a Retry-After from the Web App can impose, seconds.",
    "fport": "FPort of the fragments (an application port, 1..223).",
    "simulated_uplinks": "The Things Stack uplinks marked simulated: ignore (202, not stored), reject (400), accept.",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    "chirpstack_api_url": "ChirpStack v4 REST API base URL, for downlinks to v2 devices heard through ChirpStack.",
    "chirpstack_api_token": "ChirpStack API key for the device queue.",
    "chirpstack_auth_header": "Authorization, or Grpc-Metadata-Authorization (ChirpStack's REST proxy).",
    "downlink_url": "Where downlinks to v2 devices heard on /uplink go (the collector's own format).",
    "downlink_token": "Bearer token for --downlink-url.",
    "repair_target": "Predicted first-round rebuild the redundancy policy keeps (0.99).",
    "repair_adaptive": "Steer each v2 device's parity with REDUNDANCY.",
    "mqtt_url": "Take uplinks from this MQTT broker: mqtt://user:password@host:port or mqtts://...",
    "mqtt_integration": "chirpstack or ttn: whose topics and payloads the broker carries.",
    "mqtt_topic": "Topic filter (repeatable; default: the network server's uplink topic).",
    "mqtt_share": "Join this MQTT 5 shared-subscription group (see docs/operations.md, MQTT).",
    "mqtt_partition": "i/n: take only the devices of partition i of n (several collectors, one broker).",
    "mqtt_client_id": "Client id of the persistent session (default: from the host name and --db).",
}


def _config_options(func):
    """One flag per setting of :class:`ServiceConfig` (default: not given)."""
    for name in reversed(list(FIELDS)):
        f = FIELDS[name]
        typ = str(f.type)
        flag = "--" + name.replace("_", "-")
        help_ = _HELP.get(name, f"Setting {name} (see docs/operations.md).")
        hidden = name in ("clock_start",)
        if typ.startswith("list"):
            opt = click.option(flag, name, multiple=True, help=help_, hidden=hidden)
        elif typ.startswith("bool"):
            opt = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_, hidden=hidden)
        elif name == "deadline_policy":
            opt = click.option(flag, name, type=click.Choice(["fixed", "adaptive"]), default=None, help=help_)
        elif name == "clock":
            opt = click.option(flag, name, type=click.Choice(["system", "manual"]), default=None, help=help_)
        elif name == "simulated_uplinks":
            opt = click.option(flag, name, type=click.Choice(["ignore", "reject", "accept"]), default=None,
                               help=help_)
        elif name == "fport":
            opt = click.option(flag, name, type=click.IntRange(1, 223), default=None, help=help_)
        elif name == "log_level":
            opt = click.option(flag, name, type=click.Choice(LOG_LEVELS, case_sensitive=False), default=None,
                               help=help_)
        elif typ.startswith("int"):
            opt = click.option(flag, name, type=int, default=None, help=help_, hidden=hidden)
        elif typ.startswith("float"):
            opt = click.option(flag, name, type=float, default=None, help=help_, hidden=hidden)
        else:
            opt = click.option(flag, name, type=str, default=None, help=help_, hidden=hidden)
        func = opt(func)
    return func


def _load(config: str | None, overrides: dict[str, Any]) -> ServiceConfig:
    try:
        return load_config(config, overrides=overrides)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


_config_opt = click.option("--config", "config", type=click.Path(dir_okay=False),
                           envvar="COLLECTOR_CONFIG", help="TOML config file.")
_db_opt = click.option("--db", "db", default=None, help="Database file (default: from the config, collector.db).")


def _open_store(config: str | None, db: str | None) -> Store:
    cfg = _load(config, {"db": db})
    try:
        import os
        if not os.path.exists(cfg.db):
            raise click.ClickException(f"database {cfg.db!r} does not exist")
        return open_store(cfg.db, check=False)
    except DatabaseUnusable as e:
        raise click.ClickException(str(e)) from None


def check_db_path(db: str) -> None:
    """Refuse, in one line, a database the service could not create or write: its
    directory must exist already (a mistyped path must not silently become a new,
    empty database in a new directory) and be writable."""
    import os
    if db == ":memory:":
        return
    parent = os.path.dirname(os.path.abspath(db))
    if not os.path.isdir(parent):
        raise click.ClickException(f"the directory of database {db!r} does not exist ({parent}); create it first")
    if os.path.isdir(db):
        raise click.ClickException(f"database {db!r} is a directory")
    if os.path.exists(db):
        if not os.access(db, os.R_OK | os.W_OK):
            raise click.ClickException(f"database {db!r} is not readable and writable by this user")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise click.ClickException(f"cannot create database {db!r}: directory {parent} is not writable")


def _open_rw(config: str | None, db: str | None) -> Store:
    """The store for a command that writes (the database is created if missing)."""
    path = _load(config, {"db": db}).db
    check_db_path(path)
    try:
        return open_store(path, check=False)
    except DatabaseUnusable as e:
        raise click.ClickException(str(e)) from None


@contextlib.contextmanager
def _store(config: str | None, db: str | None, *, create: bool = False) -> Iterator[Store]:
    """The store of ``--config``/``--db``, closed afterwards; without ``create`` the
    database must exist already."""
    store = _open_rw(config, db) if create else _open_store(config, db)
    try:
        yield store
    finally:
        store.close()


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _echo_rows(rows: list[dict], as_json: bool, key: str, empty: str, line: Callable[[dict], str]) -> None:
    """A listing: JSON ``{key: rows}``, or one ``line(row)`` a row (``empty`` for none)."""
    if as_json:
        _echo_json({key: rows})
        return
    if not rows:
        click.echo(empty)
    for r in rows:
        click.echo(line(r))


def _dev_eui(value: str) -> str:
    try:
        return check_eui(value, "DEV_EUI")
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


# --------------------------------------------------------------------------- serve


@click.command()
@_config_opt
@_config_options
def serve(config: str | None, **overrides: Any) -> None:
    """Run the collector service until SIGTERM or SIGINT.

    Every setting comes from the defaults, then the TOML file (--config), then
    COLLECTOR_<NAME> environment variables, then these flags.
    """
    from collector.service.app import run_service
    from collector.service.logs import setup_logging

    cfg = _load(config, overrides)
    check_db_path(cfg.db)
    setup_logging(cfg.log_level)
    for name in unknown_env():
        logging.getLogger("collector.config").warning("event=unknown_setting variable=%s detail=%r", name,
                                                      "no such setting; ignored")
    try:
        asyncio.run(run_service(cfg))
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # e.g. the database cannot be created where --db points
        raise click.ClickException(f"cannot start: {e}") from None
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- status


@click.command()
@_config_opt
@_db_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config: str | None, db: str | None, as_json: bool) -> None:
    """Counts of open and closed messages, documents, incidents and dead letters."""
    with _store(config, db) as store:
        c = store.counts()
        c["repair"] = outbox.counts(store.query)
        repair = repair_lines(store.query)
    if as_json:
        _echo_json(c)
        return
    click.echo(f"open messages:   {c['openMessages']}")
    m = c["messages"]
    click.echo(f"closed messages: complete {m['complete']}, partial {m['partial']}, incident {m['incident']}")
    d = c["documents"]
    click.echo(f"documents:       pending {d['pending']}, delivered {d['delivered']}, dead letters {d['dead']}")
    click.echo(f"incidents:       {c['incidents']}")
    click.echo(f"fragments kept:  {c['fragments']}")
    click.echo(f"devices:         {c['devices']}")
    for line in repair:
        click.echo(line)


# --------------------------------------------------------------------------- incidents


@click.group(invoke_without_command=True)
@_config_opt
@_db_opt
@click.option("--device", help="Only this DevEUI.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def incidents(ctx: click.Context, config, db, device, limit, as_json) -> None:
    """List incidents (messages that gave no document, caps hit); `show ID` for one."""
    ctx.obj = {"config": config, "db": db}
    if ctx.invoked_subcommand is not None:
        return
    with _store(config, db) as store:
        rows = store.list_incidents(device, limit)
    _echo_rows(rows, as_json, "incidents", "no incidents",
               lambda r: f"{r['id']:>6}  {r['created']}  {r['devEui']}  msg {r['msgId']}  {r['code']}: {r['detail']}")


@incidents.command("show")
@click.argument("ident")
@click.pass_context
def incidents_show(ctx: click.Context, ident: str) -> None:
    """Show one incident (by number or message id) with all that arrived."""
    with _store(**ctx.obj) as store:
        d = store.get_incident(ident)
    if d is None:
        raise click.ClickException(f"no incident {ident!r}")
    _echo_json(d)


# --------------------------------------------------------------------------- dead letters


@click.group()
@_config_opt
@_db_opt
@click.pass_context
def deadletters(ctx: click.Context, config, db) -> None:
    """Documents the Web App would not take: list, show, retry."""
    ctx.obj = {"config": config, "db": db}


@deadletters.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def deadletters_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    with _store(**ctx.obj) as store:
        rows = store.list_documents("dead", limit)
    _echo_rows(rows, as_json, "deadletters", "no dead letters",
               lambda r: f"{r['id']}  {r['deadAt']}  {r['idempotencyKey']}  attempts {r['attempts']}  "
                         f"{r['deadReason']}")


@deadletters.command("show")
@click.argument("uid")
@click.pass_context
def deadletters_show(ctx: click.Context, uid: str) -> None:
    """Show one dead letter: the document, every attempt and the last response."""
    with _store(**ctx.obj) as store:
        d = store.get_document(uid)
    if d is None or d["state"] != "dead":
        raise click.ClickException(f"no dead letter {uid!r}")
    _echo_json(d)


@deadletters.command("retry")
@click.argument("uids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Retry every dead letter.")
@click.pass_context
def deadletters_retry(ctx: click.Context, uids: tuple[str, ...], all_: bool) -> None:
    """Queue dead letters for delivery again (a running service sends them within seconds)."""
    if bool(uids) == all_:
        raise click.UsageError("give dead-letter ids or --all")
    with _store(**ctx.obj) as store:
        n = store.write(op_retry_dead(None if all_ else list(uids), time.time()))
    if not all_ and n < len(uids):
        click.echo(f"queued {n} of {len(uids)} (the others are not dead letters)", err=True)
        if n == 0:
            sys.exit(1)
    click.echo(f"queued {n} dead letter(s) for delivery")


# --------------------------------------------------------------------------- devices


@click.group()
@_config_opt
@_db_opt
@click.pass_context
def devices(ctx: click.Context, config, db) -> None:
    """The device registry: per-device upload tokens."""
    ctx.obj = {"config": config, "db": db}


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def devices_list(ctx: click.Context, as_json: bool) -> None:
    """List registered devices (tokens are not shown)."""
    with _store(**ctx.obj) as store:
        rows = store.list_devices()
    _echo_rows(rows, as_json, "devices", "no devices registered",
               lambda r: f"{r['devEui']}  token: {'yes' if r['hasToken'] else 'no '}  {r['name'] or ''}")


@devices.command("add")
@click.argument("dev_eui")
@click.option("--token", help="Upload token of this device.", envvar="COLLECTOR_DEVICE_TOKEN")
@click.option("--name", help="A name for the device.")
@click.pass_context
def devices_add(ctx: click.Context, dev_eui: str, token: str | None, name: str | None) -> None:
    """Register a device (or replace its token)."""
    eui = _dev_eui(dev_eui)
    try:
        check_token(token, "--token")
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    with _store(**ctx.obj, create=True) as store:
        store.write(op_device(eui, token, name, time.time()))
    click.echo(f"device {eui} registered")


@devices.command("remove")
@click.argument("dev_eui")
@click.pass_context
def devices_remove(ctx: click.Context, dev_eui: str) -> None:
    """Remove a device from the registry."""
    eui = _dev_eui(dev_eui)
    with _store(**ctx.obj, create=True) as store:
        n = store.write(op_device_remove(eui))
    if not n:
        raise click.ClickException(f"device {eui} is not registered")
    click.echo(f"device {eui} removed")


@devices.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def devices_import(ctx: click.Context, path: str) -> None:
    """Import a registry file (.toml or .csv); existing devices are updated."""
    try:
        devs = load_file(path)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    now = time.time()
    with _store(**ctx.obj, create=True) as store:
        store.apply([op_device(d.dev_eui, d.token, d.name, now) for d in devs])
    click.echo(f"imported {len(devs)} device(s)")


# --------------------------------------------------------------------------- the stand-in Web App


@click.command("webapp-stub")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--db", default=":memory:", show_default=True, help="SQLite file for what it receives.")
@click.option("--token", "tokens", multiple=True, help="Accepted upload token (repeatable).")
@click.option("--user", "users", multiple=True, help="USER:PASSWORD for the login route (repeatable).")
@click.option("--error-rate", default=0.0, show_default=True, help="Fraction of uploads answered 500.")
@click.option("--rate-limit-rate", default=0.0, show_default=True, help="Fraction of uploads answered 429.")
@click.option("--retry-after", default=1.0, show_default=True, help="Retry-After of 429 answers, seconds.")
@click.option("--latency", default=0.0, show_default=True, help="Seconds added to every upload.")
@click.option("--outage", "outages", multiple=True,
              help="START:END seconds after start during which uploads get 503 (repeatable).")
@click.option("--seed", default=0, show_default=True, help="Seed of the fault stream.")
def webapp_stub(host, port, db, tokens, users, error_rate, rate_limit_rate, retry_after, latency, outages,
                seed) -> None:
    """Run the stand-in Web App (upload contract, XSD validation, idempotency, faults).

    Faults can also be changed while it runs: POST /stub/faults with a JSON object.
    """
    from aiohttp import web

    from collector.service.logs import setup_logging
    from collector.testing.webapp_stub import Faults, StubConfig, WebAppStub

    user_map = {}
    for u in users:
        if ":" not in u:
            raise click.BadParameter(f"{u!r} is not USER:PASSWORD", param_hint="--user")
        name, pw = u.split(":", 1)
        user_map[name] = pw
    windows = []
    for o in outages:
        try:
            a, b = (float(x) for x in o.split(":"))
        except ValueError:
            raise click.BadParameter(f"{o!r} is not START:END", param_hint="--outage") from None
        windows.append([a, b])
    faults = Faults(error_rate=error_rate, rate_limit_rate=rate_limit_rate, retry_after=retry_after,
                    latency=latency, outages=windows)
    setup_logging("INFO")
    stub = WebAppStub(StubConfig(host=host, port=port, db=db, tokens=list(tokens), users=user_map, seed=seed,
                                 faults=faults))
    click.echo(f"stand-in Web App on http://{host}:{port}{stub.cfg.upload_path}", err=True)
    web.run_app(stub.app(), host=host, port=port, access_log=None, print=None)


def register(cli: click.Group) -> None:
    """Add the service commands to the ``collector`` group."""
    for cmd in (serve, status, incidents, deadletters, devices, webapp_stub):
        cli.add_command(cmd)
