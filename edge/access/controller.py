"""Glue on the event loop: card reads and face verdicts -> policy -> journal -> relay; door inputs
-> door machine.

Everything here runs in the asyncio loop's thread; drivers hand their observations over with
`call_soon_threadsafe`. The order on the card path is fixed: decide, write the event to the journal
(it survives a kill from that moment), then command the relay. Nothing on that path touches the
network or waits on anything slower than a local SQLite commit.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from typing import TYPE_CHECKING

from drivers.pcsc import CardRead
from drivers.ports import LockRelay, Output
from drivers.sam_ga467 import IdRead
from edge.access import antipassback
from edge.access import passes as pass_rules
from edge.access.alarms import AlarmBook
from edge.access.door import DoorEvent, DoorMachine, Hold, Pulse
from edge.access.platevote import READ, PlateVerdict, VehicleVote
from edge.access.policy import Decision, Reason, decide
from edge.access.second_factor import Pending, SecondFactor
from edge.access.walkup import FaceAnswer, Verdict, WalkUp
from edge.config import Door, Ga467Reader, GatewayConfig, PcscReader
from edge.privacy import Tokenizer, short
from edge.store.outbox import Event, Outbox
from edge.store.passback import Passages
from edge.store.passes import PassUses
from edge.store.whitelist import Whitelist
from protocol import Keyring, Rejected
from protocol import passes as pass_tokens

if TYPE_CHECKING:  # a card-only daemon never loads numpy
    import numpy as np

    from edge.vision.plate import PlateRead

log = logging.getLogger(__name__)


@dataclass
class DoorIO:
    """Where a door's lock output is, and which board inputs are its contact, exit and fire."""

    door: Door
    link: LockRelay
    output: Output

    def reads_inputs(self, port: str, unit: int) -> bool:
        return self.door.relay.reads_inputs(port, unit)


def _bit(bits: int, index: int | None) -> bool | None:
    return None if index is None else bool(bits >> index & 1)


class Controller:
    def __init__(self, cfg: GatewayConfig, whitelist: Whitelist, outbox: Outbox, tokenizer: Tokenizer,
                 doors: dict[str, DoorIO], *, listeners: Sequence[Callable[[Event], None]] = (),
                 stale: Callable[[], bool] = lambda: False, liveness: Callable[[list[np.ndarray]], float] = lambda chips: 0.0,
                 passages: Passages | None = None, pass_keys: Keyring | None = None, pass_uses: PassUses | None = None,
                 alarms: AlarmBook | None = None,
                 clock: Callable[[], float] = time.monotonic, wallclock: Callable[[], datetime] = datetime.now):
        """`listeners`: told of every event after it is journaled (tests, bench). `stale`: whether the
        list is stale (sync's flag; never stale without sync). `liveness`: the score of a walk-up's
        face chips (edge.vision.face.liveness_score where cameras are configured). `passages`: where
        credentials last passed (doors with anti-passback need it). `pass_keys`: the keys visitor
        passes must be signed with (central's, as for lists; none: every pass is refused);
        `pass_uses`: how often each pass opened a door here. `alarms`: what turns events into alarms."""
        self.cfg = cfg
        self.whitelist = whitelist
        self.outbox = outbox
        self.tokenizer = tokenizer
        self.io = doors
        self.machines = {d: DoorMachine(io.door) for d, io in doors.items()}
        self._holidays: frozenset[date] = frozenset(cfg.holidays)
        self._clock = clock
        self._wallclock = wallclock
        self.listeners = list(listeners)
        self.readers_by_name: dict[str, PcscReader | Ga467Reader | None] = {}
        self.passages = passages
        self._resets = {d.id: clock_time.fromisoformat(d.antipassback_reset) for d in cfg.doors}
        self._links_down: set[str] = set()
        self.stale = stale
        self.factors = SecondFactor(cfg.face.second_factor_s)
        self.walkups: dict[str, WalkUp] = {}
        self.camera_door = {c.id: c.door for c in cfg.cameras}
        self.liveness = liveness
        self.votes: dict[str, VehicleVote] = {}
        self._parts_down: set[str] = set()
        self.pass_keys = pass_keys
        self.pass_uses = pass_uses
        self.sightings = pass_rules.Sightings()
        self.alarms = alarms or AlarmBook()
        self.accepting = True  # False once the daemon stops: no decision it could not carry out

    # -- card path ------------------------------------------------------------------------------
    def reader_for(self, name: str) -> PcscReader | Ga467Reader | None:
        """The configured reader a read came from: a PC/SC reader by name match, a GA 467 reader by port."""
        if name not in self.readers_by_name:
            self.readers_by_name[name] = next((r for r in self.cfg.readers if (r.match in name if isinstance(r, PcscReader)
                                                                               else r.port == name)), None)
        return self.readers_by_name[name]

    def on_card(self, read: CardRead) -> Event | None:
        if not self.accepting:
            return None
        reader = self.reader_for(read.reader)
        if reader is None:
            log.warning("read on unmapped reader %s ignored", read.reader)
            return None
        token = self.tokenizer.token_raw(read.kind, read.uid)
        return self._credential(reader.door, factor="card", kind=read.kind, token=token, t_ns=read.t_seen_ns, direction=reader.direction)

    def on_identity(self, read: IdRead) -> Event | None:
        """An ID card on a GA 467 reader: the ID number is a credential (`idno`) at an access reader,
        a registration at a register reader. Only its token and validity dates are used here."""
        reader = self.reader_for(read.reader)
        if not self.accepting or not isinstance(reader, Ga467Reader):
            return None
        token = self.tokenizer.token_raw("idno", read.idno)
        expired = read.valid_to is not None and self._wallclock().date() > read.valid_to
        if reader.mode == "register":
            return self._register(reader, read, token, expired=expired)
        if expired:
            return self._record_decision(reader.door, Decision(False, Reason.ID_CARD_EXPIRED), kind="idno", token=token, t_ns=read.t_seen_ns)
        return self._credential(reader.door, factor="card", kind="idno", token=token, t_ns=read.t_seen_ns, direction=reader.direction)

    def _register(self, reader: Ga467Reader, read: IdRead, token: str, *, expired: bool) -> Event:
        """A new tenant's identity, sealed by the driver to central's registration key, into the
        journal: it reaches central through the outbox like every event, however long the network
        is down. Nothing in clear: the event carries the token and the sealed bytes only."""
        if expired or read.sealed is None:
            event = Event("registration", "registration_refused", door=reader.door, kind="idno", token=short(token),
                          detail="id_card_expired" if expired else "the reader did not seal the identity")
        else:
            event = Event("registration", "registration_sent", door=reader.door, kind="idno", token=short(token),
                          sealed=base64.b64encode(read.sealed).decode())
        self.record(event)
        return event

    # -- face path ------------------------------------------------------------------------------
    def on_face(self, camera_id: str, answer: FaceAnswer | None, chip: np.ndarray | None, t_ns: int) -> Event | None:
        """One frame's answer from the vision worker (None: no face in the frame)."""
        door_id = self.camera_door.get(camera_id)
        if door_id is None or not self.accepting:
            return None
        walkup = self.walkups.get(camera_id)
        if walkup is None:
            walkup = self.walkups[camera_id] = WalkUp(self.cfg.face, self.liveness)
        verdict = walkup.observe(self._clock(), answer, chip)
        return None if verdict is None else self.on_verdict(door_id, verdict, t_ns)

    def on_verdict(self, door_id: str, verdict: Verdict, t_ns: int) -> Event | None:
        if verdict.person is None:
            detail = None if verdict.liveness is None else f"liveness {verdict.liveness}"
            return self._record_decision(door_id, Decision(False, Reason(verdict.reason)), kind="face", token=None, t_ns=t_ns, detail=detail)
        token = self.tokenizer.token("face", verdict.person)
        return self._credential(door_id, factor="face", kind="face", token=token, t_ns=t_ns)

    # -- plate path -----------------------------------------------------------------------------
    def on_plate(self, camera_id: str, reads: list[PlateRead], t_ns: int) -> Event | None:
        """One frame's plates from the vision worker (edge.vision.plate.PlateRead, readable first, then largest)."""
        door_id = self.camera_door.get(camera_id)
        if door_id is None or not self.accepting:
            return None
        vote = self.votes.get(camera_id)
        if vote is None:
            p = self.cfg.plate
            vote = self.votes[camera_id] = VehicleVote(p.frames, p.gone_s, p.unreadable_s)
        readings = [(c.text, c.p) for c in reads[0].candidates] if reads else None
        verdict = vote.observe(self._clock(), readings)
        return None if verdict is None else self.on_plate_verdict(door_id, verdict, t_ns)

    def on_plate_verdict(self, door_id: str, verdict: PlateVerdict, t_ns: int) -> Event:
        """Each candidate reading is hashed and looked up in vote order: the first one on the list decides."""
        if verdict.reason != READ:
            return self._record_decision(door_id, Decision(False, Reason.PLATE_UNREADABLE), kind="plate", token=None, t_ns=t_ns)
        tokens = [self.tokenizer.token("plate", text) for text in verdict.candidates]
        token = next((t for t in tokens if self.whitelist.lookup(t) is not None), tokens[0])
        return self._credential(door_id, factor="plate", kind="plate", token=token, t_ns=t_ns, unknown=Reason.UNKNOWN_PLATE)  # type: ignore[return-value]

    # -- visitor passes -------------------------------------------------------------------------
    def on_pass(self, camera_id: str, text: str, t_ns: int) -> Event | None:
        """A QR code a door camera read: one presentation however many frames show it. Decided from
        the pass's signature and this gateway's own state only (no network): the use is counted on
        disk before the relay moves, so a restart does not give it back."""
        door_id = self.camera_door.get(camera_id)
        if door_id is None or not self.accepting or not self.sightings.new(camera_id, text, self._clock()):
            return None
        try:
            if self.pass_keys is None:
                raise Rejected("pass_bad_signature", "this gateway trusts no signing key (sync.trusted_keys)")
            p = pass_tokens.read(text, self.pass_keys, self.cfg.gateway.site)
        except Rejected as r:
            return self._record_decision(door_id, Decision(False, Reason(r.reason)), kind="pass", token=None, t_ns=t_ns)
        revocation = self.whitelist.lookup(self.tokenizer.token_raw("pass", p.id))
        used = self.pass_uses.used(p.id) if self.pass_uses is not None else 0
        reason = pass_rules.check(p, door_id, self._wallclock().timestamp(), used=used,
                                  revoked=revocation is not None and revocation.kind == "pass_revoked")
        if reason is Reason.VISITOR_GRANTED and self.stale() and self.io[door_id].door.when_stale == "deny":
            reason = Reason.WHITELIST_STALE  # a stale list may lack a revocation: a door that denies when stale denies passes too
        granted = reason is Reason.VISITOR_GRANTED
        if granted and self.pass_uses is not None:
            used = self.pass_uses.use(p.id, p.not_after)
        return self._record_decision(door_id, Decision(granted, reason), kind="pass", token=p.id, t_ns=t_ns,
                                     detail=f"pass {p.id} host {p.host} use {used} of {p.uses}")

    # -- both -----------------------------------------------------------------------------------
    def _credential(self, door_id: str, *, factor: str, kind: str, token: str, t_ns: int,
                    unknown: Reason = Reason.UNKNOWN_CREDENTIAL, direction: str = "in") -> Event | None:
        """`direction`: the reader's (cameras count as `in`), for anti-passback."""
        io = self.io[door_id]
        machine = self.machines[door_id]
        entry = self.whitelist.lookup(token)
        now = self._wallclock()
        decision = decide(kind, entry, io.door, now, schedules=self.cfg.schedules,
                          holidays=self._holidays, fire_active=machine.fire, stale=self.stale())
        if decision.reason is Reason.UNKNOWN_CREDENTIAL:
            decision = Decision(False, unknown)
        if io.door.mode == "card_and_face" and decision.reason is Reason.GRANTED and decision.person:
            first, expired = self.factors.offer(door_id, factor=factor, person=decision.person, kind=kind, token=short(token),
                                                now=self._clock())
            self._expired(expired)
            if first is None:
                log.info("door=%s kind=%s token=%s waiting for the second factor", door_id, kind, short(token))
                return None
            kind = f"{first.kind}+{kind}" if first.factor == "card" else f"{kind}+{first.kind}"
        decision, violation = self._passback(io.door, token, direction, decision, now)
        event = self._record_decision(door_id, decision, kind=kind, token=token, t_ns=t_ns)
        if violation:
            self.record(Event("access", "antipassback_violation", door=door_id, kind=kind, token=short(token),
                              detail=f"in again without an out ({io.door.passback_area})"))
        if decision.reason is Reason.GRANTED and self.passages is not None and io.door.antipassback != "off":
            self.passages.record(io.door.passback_area, token, antipassback.Passage(direction, now.timestamp()))
        return event

    def _passback(self, door: Door, token: str, direction: str, decision: Decision, now: datetime) -> tuple[Decision, bool]:
        """The decision after anti-passback, and whether a soft rule was broken. Only a grant on the
        list is checked: a fire release opens the door anyway and is not a passage."""
        if door.antipassback == "off" or self.passages is None or decision.reason is not Reason.GRANTED:
            return decision, False
        verdict = antipassback.check(door.antipassback, self.passages.last(door.passback_area, token), direction, now,
                                     self._resets[door.id])
        if verdict is antipassback.Verdict.VIOLATION and door.antipassback == "hard":
            return Decision(False, Reason.ANTIPASSBACK, decision.person), False
        return decision, verdict is antipassback.Verdict.VIOLATION

    def _record_decision(self, door_id: str, decision: Decision, *, kind: str, token: str | None, t_ns: int,
                         detail: str | None = None) -> Event:
        latency_ms = (time.monotonic_ns() - t_ns) / 1e6
        event = Event("access", decision.reason.value, door=door_id, kind=kind, token=token and short(token),
                      decision="granted" if decision.granted else "denied", latency_ms=round(latency_ms, 3),
                      detail=detail, mono_ns=t_ns)
        self.outbox.put(event)  # in the journal before the lock moves
        if decision.granted:
            self._apply(door_id, self.machines[door_id].grant(self._clock()))
        log.info("door=%s kind=%s token=%s decision=%s reason=%s seq=%s", door_id, kind, event.token or "-",
                 event.decision, event.reason, event.seq or "kept")
        self.notify_listeners(event)
        self._raise(self.alarms.observe(event, self._clock()))
        return event

    def _expired(self, pending: list[Pending]) -> None:
        for p in pending:
            event = Event("access", Reason.SECOND_FACTOR_TIMEOUT.value, door=p.door, kind=p.kind, token=p.token,
                          decision="denied", detail=f"no {'face' if p.factor == 'card' else 'card'} within "
                                                    f"{self.cfg.face.second_factor_s:g} s")
            self.record(event)

    # -- door inputs ----------------------------------------------------------------------------
    def on_inputs(self, port: str, unit: int, bits: int) -> None:
        now = self._clock()
        for door_id, io in self.io.items():
            if not io.reads_inputs(port, unit):
                continue
            ins = io.door.inputs
            actions = self.machines[door_id].inputs(now, contact=_bit(bits, ins.contact),
                                                    exit_button=_bit(bits, ins.exit_button), fire=_bit(bits, ins.fire_alarm),
                                                    tamper=_bit(bits, ins.tamper))
            self._apply(door_id, actions)

    def on_link(self, port: str, up: bool, detail: str) -> None:
        if up and port not in self._links_down:
            return  # first contact at start-up: nothing was lost
        (self._links_down.discard if up else self._links_down.add)(port)
        for door_id, io in self.io.items():
            if io.link.port_name != port:
                continue
            machine = self.machines[door_id]
            if up:
                # back to the state the door should be in now
                io.link.hold(io.output, machine.fire)
            else:
                # the state the link writes first, the moment it comes back
                io.link.hold(io.output, machine.shutdown_state() or machine.fire)
            reason = "relay_link_restored" if up else "relay_link_lost"
            self.record(Event("system", reason, door=door_id, detail=f"{detail}; fail_mode={io.door.fail_mode}"))
            self._raise(self.alarms.set("relay_down", not up, door=door_id, subject=port))

    def on_part(self, kind: str, name: str, *, up: bool, detail: str, door: str | None = None) -> None:
        """A reader, pcscd, a camera or the vision worker went away or came back: `{kind}_down` /
        `{kind}_up` in the journal. The first sign of life at start-up is not news."""
        key = f"{kind}:{name}"
        if up and key not in self._parts_down:
            return
        (self._parts_down.discard if up else self._parts_down.add)(key)
        self.record(Event("system", f"{kind}_{'up' if up else 'down'}", door=door, detail=f"{name}: {detail}"))
        self._raise(self.alarms.part(kind, name, up=up, door=door))

    def remote_pulse(self, door_id: str, req_id: str) -> None:
        """A signed remote test pulse (field technician via central): journaled, then pulsed as a grant."""
        self.record(Event("system", "remote_pulse", door=door_id, detail=f"req {req_id}"))
        self._apply(door_id, self.machines[door_id].grant(self._clock()))

    def tick(self) -> None:
        """Called a few times a second: held-open alarms, second factors that did not come."""
        now = self._clock()
        self._expired(self.factors.expire(now))
        for door_id, machine in self.machines.items():
            self._apply(door_id, machine.tick(now))
        self._raise(self.alarms.tick(now))

    # -- shutdown -------------------------------------------------------------------------------
    def final_states(self) -> dict[LockRelay, dict[Output, bool]]:
        """Each link's outputs in their fail mode (safe: released; secure: locked)."""
        out: dict[LockRelay, dict[Output, bool]] = {}
        for door_id, io in self.io.items():
            out.setdefault(io.link, {})[io.output] = self.machines[door_id].shutdown_state()
        return out

    # -- helpers --------------------------------------------------------------------------------
    def _apply(self, door_id: str, actions: list[DoorEvent | Pulse | Hold]) -> None:
        io = self.io[door_id]
        for a in actions:
            if isinstance(a, DoorEvent):
                self.record(Event("door", a.reason, door=door_id))
            elif isinstance(a, Pulse):
                io.link.pulse(io.output, a.ms)
            elif isinstance(a, Hold):
                io.link.hold(io.output, a.released)

    def record(self, event: Event) -> None:
        self.outbox.put(event)
        if event.severity:
            log.warning("door=%s alarm=%s %s subject=%s seq=%s", event.door, event.reason, event.severity, event.detail or "-",
                        event.seq or "kept")
        else:
            log.info("door=%s event=%s seq=%s", event.door, event.reason, event.seq or "kept")
        self.notify_listeners(event)
        self._raise(self.alarms.observe(event, self._clock()))

    def _raise(self, alarms: list[Event]) -> None:
        for alarm in alarms:
            self.record(alarm)

    def condition(self, alarm: str, active: bool, *, subject: str = "") -> None:
        """A gateway-wide condition the daemon checks (journal_overflow, disk_nearly_full)."""
        self._raise(self.alarms.set(alarm, active, subject=subject))

    def notify_listeners(self, event: Event) -> None:
        for cb in self.listeners:
            cb(event)
