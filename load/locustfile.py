"""Locust user mix for items-api.

Two kinds of users, spawned in equal numbers, as the FastAPI brief specifies:

* ``CrudUser``: the full lifecycle. Think time 1-3 s. It creates 3 items in
  ``on_start``; task weights: list 5, get 3, create 2, update 1 (a PUT of the whole
  item), delete 1. It remembers the ids it created, reads and updates only those, and
  deletes only while it holds more than the 3 it started with (so it never runs dry and
  never races another user).
* ``ReadOnlyUser``: browses. Think time 2-5 s. Task weights: list 10, get 5; a get
  picks an id from the page its last list call returned.

Every request that carries an id is reported as ``/items/{id}`` so the stats have one
row per route, the same grouping as the service's ``http_route`` label.

``LOCUST_WAIT_MIN`` and ``LOCUST_WAIT_MAX`` (seconds), when set, replace both think
times: ``load/stress.py`` shortens them to push more requests per user in its quick
profiles; its ``brief`` profile keeps the brief's.

Run:  locust -f load/locustfile.py --host http://127.0.0.1:8000
"""

import os
import random
import uuid

import gevent
from locust import FastHttpUser, between, events, task
from locust.stats import CSV_STATS_INTERVAL_SEC

ITEM_ROUTE = "/items/{id}"
LIST_ROUTE = "/items"
PAGE_SIZE = 20
# CrudUser creates this many items when it starts, and deletes only while it holds more.
SEED_ITEMS = 3


@events.quitting.add_listener
def _final_csv(environment, **_kwargs):
    """Locust rewrites its --csv files once a second from a background greenlet and does
    not write them again at exit, so they can miss the last second of a run (the printed
    summary does not). By the time `quitting` fires the runner has stopped every user and
    the stats are final: yield long enough for one more write, so the CSV totals equal the
    summary (load/stress.py compares them with the service's own request counter)."""
    options = getattr(environment, "parsed_options", None)
    if options is not None and getattr(options, "csv_prefix", None):
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)


def _wait_time(low, high):
    """The brief's think time, unless LOCUST_WAIT_MIN/MAX override it."""
    low = float(os.environ.get("LOCUST_WAIT_MIN", low))
    high = float(os.environ.get("LOCUST_WAIT_MAX", high))
    if high < low:
        low, high = high, low
    return between(low, high)


def _new_item():
    return {
        "name": f"load-{uuid.uuid4().hex[:12]}",
        "description": "made by locust",
        "price": round(random.uniform(0.5, 500.0), 2),
        "quantity": random.randint(0, 100),
    }


def _list(user):
    """GET /items, paging on from where this user's last page ended (the cursor of its
    `next_cursor`), back to the first page after the last one, as a client walking the
    whole collection would.

    Returns the ids on the page (possibly empty), or None when the call failed."""
    url = f"/items?limit={PAGE_SIZE}"
    if user.cursor:
        url += f"&cursor={user.cursor}"
    with user.client.get(url, name=LIST_ROUTE, catch_response=True) as resp:
        if resp.status_code != 200:
            resp.failure(f"list: expected 200, got {resp.status_code}")
            return None
        try:
            body = resp.json()
            items = body["items"]
            user.cursor = body["next_cursor"]
        except (ValueError, KeyError, TypeError) as err:
            resp.failure(f"list: bad body ({err})")
            return None
        resp.success()
        return [item["id"] for item in items]


class CrudUser(FastHttpUser):
    """Creates, reads, updates and deletes its own items."""

    wait_time = _wait_time(1.0, 3.0)

    def on_start(self):
        self.ids = []
        self.cursor = None
        for _ in range(SEED_ITEMS):
            self.create_item()

    @task(5)
    def list_items(self):
        _list(self)

    @task(3)
    def get_item(self):
        if not self.ids:
            # Nothing of our own yet: make something first.
            self.create_item()
            return
        item_id = random.choice(self.ids)
        with self.client.get(f"/items/{item_id}", name=ITEM_ROUTE, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"get: expected 200, got {resp.status_code}")

    @task(2)
    def create_item(self):
        with self.client.post("/items", json=_new_item(), name=LIST_ROUTE, catch_response=True) as resp:
            if resp.status_code != 201:
                resp.failure(f"create: expected 201, got {resp.status_code}")
                return
            location = resp.headers.get("Location") or resp.headers.get("location") or ""
            try:
                item_id = int(location.rsplit("/", 1)[-1]) if location else int(resp.json()["id"])
            except (ValueError, KeyError, TypeError):
                resp.failure(f"create: no usable Location ({location!r})")
                return
            self.ids.append(item_id)

    @task(1)
    def update_item(self):
        if not self.ids:
            return
        item_id = random.choice(self.ids)
        with self.client.put(f"/items/{item_id}", json=_new_item(), name=ITEM_ROUTE, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"put: expected 200, got {resp.status_code}")

    @task(1)
    def delete_item(self):
        if len(self.ids) <= SEED_ITEMS:
            return
        item_id = self.ids.pop(random.randrange(len(self.ids)))
        with self.client.delete(f"/items/{item_id}", name=ITEM_ROUTE, catch_response=True) as resp:
            if resp.status_code != 204:
                resp.failure(f"delete: expected 204, got {resp.status_code}")


class ReadOnlyUser(FastHttpUser):
    """Lists pages and opens items it saw on them."""

    wait_time = _wait_time(2.0, 5.0)

    def on_start(self):
        self.seen = []
        self.cursor = None

    @task(10)
    def list_items(self):
        ids = _list(self)
        if ids is not None:
            self.seen = ids

    @task(5)
    def get_item(self):
        if not self.seen:
            self.list_items()
            if not self.seen:
                return
        item_id = random.choice(self.seen)
        with self.client.get(f"/items/{item_id}", name=ITEM_ROUTE, catch_response=True) as resp:
            if resp.status_code == 200:
                resp.success()
            elif resp.status_code == 404:
                # A CrudUser deleted it after our list call: a legitimate race, not an error.
                self.seen = [i for i in self.seen if i != item_id]
                resp.success()
            else:
                resp.failure(f"get: expected 200, got {resp.status_code}")
