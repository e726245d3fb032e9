"""Two publishers racing on one site (two central processes on one database, as two office
clerks or a backend and a clerk): every change lands, versions follow each other one by one, the
list hash stays the hash of the rows, and the gateway converges to the same signed state."""

from __future__ import annotations

import json
import threading

from central.config import load_config
from central.server import Central
from edge.privacy import Tokenizer, load_key
from edge.store.whitelist import Entry, hash_sum
from rigs.rig import wait_until
from tests.conftest import AppThread

CENTRAL_BACKENDS = ("sqlite", "postgres")  # central's storage: each test here runs on both

ROUNDS = 15


def rows_hash(central: Central) -> str:
    with central.store.use() as db:
        rows = [tuple(json.loads(r)) for (r,) in db.execute("SELECT row FROM entries")]
    return format(hash_sum(rows), "064x")


def race(a, b) -> None:
    """Run a() and b() at the same moment, ROUNDS times."""
    gate = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(f) -> None:
        try:
            for i in range(ROUNDS):
                gate.wait(10)
                f(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures


def test_two_publishers_racing_both_land_and_the_gateway_converges(synced_factory):
    s = synced_factory(sync_extra="ack_timeout_s = 2\n")
    first = s.connect_central()
    second = Central(load_config(s.site.central_config()), client_id="central-second").connect(serve=False)
    tok = Tokenizer(load_key(s.rig.root / "site.key"))
    app = AppThread(s.rig.config_path).start()
    try:
        start = first.publish_csv(s.rig.residents_path).version
        wait_until(lambda: app.app.parts.whitelist.version == start, 15, "the first list")

        def card(who: str, i: int) -> Entry:
            return Entry(tok.token("ic", f"{'0A' if who == 'a' else '0B'}{i:06X}"), "ic", f"p-{'a' if who == 'a' else 'b'}{i:015x}",
                         frozenset({"lobby"}), None, None)

        versions: list[int] = []
        race(lambda i: versions.append(first.apply_changes([card("a", i)]).version),
             lambda i: versions.append(second.apply_changes([card("b", i)]).version))
        assert sorted(versions) == list(range(start + 1, start + 2 * ROUNDS + 1))  # one version each, none lost, none twice
        assert first.count() == 4 + 2 * ROUNDS and first.sha256() == rows_hash(first)

        # whole lists from both at once (a residents file published twice): the last to commit is the list
        base = [Entry(tok.token("ic", f"0C{i:06X}"), "ic", f"p-c{i:015x}", None, None, None) for i in range(20)]
        race(lambda i: first.publish_entries(base[: 10 + i % 5]), lambda i: second.publish_entries(base[5 + i % 3:]))
        assert first.sha256() == rows_hash(first)                       # the hash is the hash of what is there
        assert first.count() in {len(base[: 10 + (ROUNDS - 1) % 5]), len(base[5 + (ROUNDS - 1) % 3:])}

        wait_until(lambda: app.app.parts.whitelist.version == first.version, 20, "the gateway at central's version")
        assert app.app.parts.whitelist.sha256 == first.sha256()         # the same signed state
        wait_until(lambda: first.gateway(s.gw).get("applied_version") == first.version, 20, "the gateway's ack")
    finally:
        app.stop()
        second.close()
