"""/openapi.json is a contract a client can trust.

The real binary serves a fresh database (a SQLite file; a PostgreSQL database when
ITEMS_API_TEST_POSTGRES_URL names a server). Against it:

- schemathesis runs every check (`--checks all`) in every phase, the stateful one included
  (links inferred from the schemas and the `Location` header), and must find nothing;
- openapi-python-client generates a client from the LIVE document, and that client creates,
  gets, lists, patches with a null description, deletes, and reads a 422 problem.

Run with `just test-openapi` (it builds the binary); ITEMS_API_BINARY names the binary.
"""

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("ITEMS_API_BINARY") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "items-api"
)
POSTGRES_ENV = "ITEMS_API_TEST_POSTGRES_URL"
# Per operation and phase; 8 operations, so a run is a few hundred requests and ~20 s.
EXAMPLES = os.environ.get("OPENAPI_EXAMPLES", "40")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(admin_url, sql):
    subprocess.run(
        ["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def service(request, tmp_path):
    """The binary on a fresh database: yields its base URL, stops it and drops the database."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "LOG_FORMAT": "json",
    }
    drop = None
    if request.param == "sqlite":
        env["DATABASE_URL"] = f"sqlite://{tmp_path / 'items.db'}?mode=rwc"
    else:
        admin = os.environ.get(POSTGRES_ENV)
        if not admin:
            pytest.skip(f"{POSTGRES_ENV} is not set: the PostgreSQL run needs a server")
        name = f"items_test_openapi_{uuid.uuid4().hex}"
        psql(admin, f"CREATE DATABASE {name}")
        drop = (admin, name)
        url = urllib.parse.urlsplit(admin)
        env["DATABASE_URL"] = urllib.parse.urlunsplit(url._replace(path=f"/{name}"))
    log = open(tmp_path / "service.log", "w")
    child = subprocess.Popen([BINARY], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([BINARY, "healthcheck"], env=env, capture_output=True).returncode:
            assert child.poll() is None, (tmp_path / "service.log").read_text()
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.1)
        yield f"http://{env['LISTEN_ADDR']}"
        assert child.poll() is None, "the service died during the run"
    finally:
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=30)
        log.close()
        if drop:
            psql(drop[0], f"DROP DATABASE IF EXISTS {drop[1]} WITH (FORCE)")
    assert code == 0, f"exit code {code}: {(tmp_path / 'service.log').read_text()[-2000:]}"


def test_schemathesis_finds_nothing(service, tmp_path):
    command = [
        "schemathesis",
        "run",
        f"{service}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        EXAMPLES,
        # One worker: concurrent workers trip a CPython 3.11 AST race inside the generator.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    print(run.stdout[-6000:])
    assert run.returncode == 0, f"schemathesis failed:\n{run.stdout[-20000:]}\n{run.stderr[-4000:]}"
    summary = run.stdout[run.stdout.rindex("SUMMARY") :]
    # Every phase ran, the stateful one included, and the API was really exercised.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
    assert "Tested: 8" in summary, summary
    assert "No issues found" in summary, summary


def test_a_generated_client_round_trips(service, tmp_path):
    out = tmp_path / "items_api_client"
    subprocess.run(
        [
            "openapi-python-client",
            "generate",
            "--url",
            f"{service}/openapi.json",
            "--output-path",
            str(out),
            "--meta",
            "none",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("items_api_client")
        api = importlib.import_module("items_api_client.api.items")
        models = importlib.import_module("items_api_client.models")
        importlib.import_module("items_api_client.api.items.create_item")
        for name in ("get_item", "list_items", "update_item", "delete_item"):
            importlib.import_module(f"items_api_client.api.items.{name}")
        round_trip(client_module, api, models, service)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("items_api_client")]:
            del sys.modules[name]
        shutil.rmtree(out, ignore_errors=True)


def round_trip(client_module, api, models, base_url):
    client = client_module.Client(base_url=base_url, raise_on_unexpected_status=True)

    # Create: 201 with the typed item; description absent → None on the way back.
    created = api.create_item.sync_detailed(
        client=client,
        body=models.ItemInput(name="  Lamp ", price=9.5, description="brass", quantity=3),
    )
    assert created.status_code == 201, created.content
    item = created.parsed
    assert isinstance(item, models.Item)
    assert (item.name, item.price, item.quantity, item.description) == ("Lamp", 9.5, 3, "brass")
    assert created.headers["location"] == f"/items/{item.id}"

    # Get.
    got = api.get_item.sync(client=client, id=item.id)
    assert isinstance(got, models.Item) and got.id == item.id and got.name == "Lamp"

    # List: the page, the cursor of the next one, and total on request only.
    for i in range(2):
        api.create_item.sync(client=client, body=models.ItemInput(name=f"more {i}", price=1))
    page = api.list_items.sync(client=client, limit=2, count=True)
    assert isinstance(page, models.ItemList)
    assert [i.name for i in page.items] == ["Lamp", "more 0"]
    assert page.total == 3
    assert isinstance(page.next_cursor, str)
    rest = api.list_items.sync(client=client, limit=2, cursor=page.next_cursor)
    assert [i.name for i in rest.items] == ["more 1"]
    # `next` is a Python builtin, so the generator names the field `next_`.
    assert page.next_ == f"/items?limit=2&cursor={page.next_cursor}"
    assert rest.next_ is None and rest.next_cursor is None

    # Patch with a null description: it is cleared, and the client reads null back.
    patched = api.update_item.sync_detailed(
        client=client, id=item.id, body=models.ItemPatch(description=None)
    )
    assert patched.status_code == 200, patched.content
    assert patched.parsed.description is None
    assert api.get_item.sync(client=client, id=item.id).description is None

    # A 422 is a typed problem listing every bad field.
    bad = api.create_item.sync_detailed(
        client=client, body=models.ItemInput(name="ok", price=-1.0, quantity=-2)
    )
    assert bad.status_code == 422
    problem = bad.parsed
    assert isinstance(problem, models.Problem)
    assert problem.status == 422
    assert [e.field for e in problem.errors] == ["price", "quantity"]
    assert problem.trace_id

    # Delete, then the item is gone: a typed 404 problem.
    deleted = api.delete_item.sync_detailed(client=client, id=item.id)
    assert deleted.status_code == 204
    gone = api.get_item.sync_detailed(client=client, id=item.id)
    assert gone.status_code == 404 and isinstance(gone.parsed, models.Problem)
