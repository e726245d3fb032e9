"""Remote diagnostics: `cmd/req` -> `cmd/resp`, correlated by `req_id`.

- Only allow-listed operations run; an operation that acts on the building (a relay pulse) runs
  only from a signed envelope naming this gateway; read-only ones may come unsigned.
- A retained command is never acted on (whoever left it there, it is not a request for now), and
  neither is an expired one: the broker's persistent session may deliver commands queued while
  the gateway was offline, hours late. Expired requests are answered `expired` so the caller knows.
- A duplicate `req_id` (QoS 1 redelivery, a caller's retry) is answered once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import protocol
from protocol import CmdReq, CmdResp, Keyring, Rejected

log = logging.getLogger(__name__)

SEEN_MAX = 1024


@dataclass(frozen=True)
class Op:
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    acting: bool = False  # changes something in the building: must be signed
    help: str = ""


class Rpc:
    def __init__(self, gw: str, keyring: Keyring, ops: dict[str, Op], *, clock: Callable[[], float] = time.time):
        self.gw = gw
        self.keyring = keyring
        self.ops = ops
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.counters: Counter[str] = Counter()

    def on_req(self, payload: bytes, retain: bool) -> bytes | None:
        """Handle one request; return the response payload (None: nothing to answer)."""
        if retain:
            self.counters["retained"] += 1
            log.warning("retained command ignored (commands are never retained)")
            return None
        req, signed = self._parse(payload)
        if req.req_id in self._seen:
            self.counters["duplicate"] += 1
            return None
        self._seen[req.req_id] = None
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        resp = self._run(req, signed)
        self.counters["ok" if resp.ok else "error"] += 1
        return resp.dumps()

    def _parse(self, payload: bytes) -> tuple[CmdReq, bool]:
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Rejected("malformed", "command is not JSON") from None
        if isinstance(obj, dict) and "sig" in obj:
            req = protocol.load(CmdReq, self.keyring.open(payload, self.gw))
            return req, True
        if not isinstance(obj, dict):
            raise Rejected("malformed", "command is not an object")
        req = protocol.load(CmdReq, obj)
        if req.gw not in (None, self.gw):
            raise Rejected("wrong_gateway", "command names another gateway")
        return req, False

    def _run(self, req: CmdReq, signed: bool) -> CmdResp:
        if self._clock() > req.expires:
            return CmdResp(req_id=req.req_id, ok=False, error="expired")
        op = self.ops.get(req.op)
        if op is None:
            return CmdResp(req_id=req.req_id, ok=False, error=f"unknown op; allowed: {', '.join(sorted(self.ops))}")
        if op.acting and not signed:
            return CmdResp(req_id=req.req_id, ok=False, error=f"{req.op} acts on the building: it must be signed by central")
        try:
            result = op.fn(req.args)
        except (ValueError, KeyError, TypeError) as exc:
            return CmdResp(req_id=req.req_id, ok=False, error=f"{exc.__class__.__name__}: {exc}")
        log.info("remote %s (%s) done", req.op, "signed" if signed else "unsigned")
        return CmdResp(req_id=req.req_id, ok=True, result=result)
