"""The office console: a server-rendered Starlette application over `Central` and `Office`.

Staff log in (argon2 hashes, central.staff); the session is a signed cookie (SameSite=Strict,
HttpOnly, Secure behind the TLS proxy); every form carries the session's CSRF token and a POST
without it is refused. Two roles: `staff` does the daily work; `police` alone exports identities.
Every page that shows identity data (residents, registrations, the export) writes the audit log,
and so does every decision. Listens on 127.0.0.1 by default: a TLS reverse proxy faces the office.
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from central import staff
from central.office import Office
from central.passes import PassError
from central.registrations import RegistrationError
from central.server import Central
from central.web.i18n import LANGS, words
from edge.privacy import short

log = logging.getLogger(__name__)

SESSION_S = 8 * 3600
PUBLIC = {"/login"}


class Forbidden(Exception):
    pass


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def session_secret(path: Path) -> bytes:
    """The key that signs session cookies: made at the first start (0600), kept across restarts."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


class Console:
    def __init__(self, central: Central):
        self.central = central
        self.office = Office(central)
        self.env = Environment(loader=PackageLoader("central.web", "templates"), autoescape=select_autoescape(), auto_reload=False)
        self.env.filters["when"] = _when
        self.env.filters["short"] = short

    # -- plumbing -------------------------------------------------------------------------------
    def page(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        s = request.session
        if "csrf" not in s:
            s["csrf"] = secrets.token_urlsafe(24)
        lang = s.get("lang", "zh")
        html = self.env.get_template(template).render(t=words(lang), lang=lang, user=s.get("user"), role=s.get("role"), csrf=s["csrf"],
                                                      path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status)

    @staticmethod
    def who(request: Request) -> str:
        return str(request.session["user"])

    @staticmethod
    async def form(request: Request) -> dict[str, str]:
        """The POSTed form, after its CSRF token is checked against the session's."""
        data = await request.form()
        sent = str(data.get("csrf", ""))
        if not sent or not hmac.compare_digest(sent, str(request.session.get("csrf", ""))):
            raise Forbidden("csrf")
        return {k: str(v) for k, v in data.items()}

    # -- log-in ---------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page(request, "login.html")
        f = await self.form(request)
        name = f.get("user", "")[:32] or "-"
        try:
            role = self.office.log_in(name, f.get("password", ""))
        except staff.LockedOut:
            return self.page(request, "login.html", status=429, locked=True)
        if role is None:
            return self.page(request, "login.html", status=401, error=True)
        lang = request.session.get("lang", "zh")
        request.session.clear()
        request.session.update(user=f["user"], role=role, lang=lang, csrf=secrets.token_urlsafe(24), since=time.time())
        return RedirectResponse("/", 303)

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        request.session.clear()
        return RedirectResponse("/login", 303)

    async def lang(self, request: Request) -> Response:
        choice = request.path_params["lang"]
        if choice in LANGS:
            request.session["lang"] = choice
        back = urlsplit(request.headers.get("referer") or "/")
        local = back.path.startswith("/") and not back.path.startswith("//")  # this site's page only: no open redirect
        return RedirectResponse(back.path if local else "/", 303)

    # -- pages ----------------------------------------------------------------------------------
    async def gateways(self, request: Request) -> Response:
        c = self.central
        rows = c.gateways()
        last = self.office.last_events()
        faults: dict[str, list[str]] = {}
        for a in self.office.alarms():
            faults.setdefault(a["gw"], []).append(a["name"])
        for gw in c.cfg.central.gateways:
            if not any(r["gw"] == gw for r in rows):
                rows.append({"gw": gw, "state": None, "applied_version": None, "last_seen": None})
        return self.page(request, "gateways.html", gateways=rows, last=last, faults=faults, version=c.version)

    async def residents(self, request: Request) -> Response:
        if request.method == "POST":
            f = await self.form(request)
            try:
                if f.get("action") == "end":
                    self.office.end_care(f["person"], self.who(request))
                else:
                    self.office.set_care(f["person"], quiet_h=float(f.get("quiet_h") or 24), consent_by=f.get("consent_by", ""),
                                         who=self.who(request))
            except ValueError as exc:
                return self.page(request, "residents.html", status=400, people=self.office.residents(self.who(request)), error=str(exc))
            return RedirectResponse("/residents", 303)
        return self.page(request, "residents.html", people=self.office.residents(self.who(request)))

    async def registrations(self, request: Request) -> Response:
        rows = self.central.registrations(self.who(request), states=("pending", "approved", "rejected"))
        return self.page(request, "registrations.html", rows=rows)

    async def decide(self, request: Request) -> Response:
        f = await self.form(request)
        reg_id, who = request.path_params["reg_id"], self.who(request)
        action = request.path_params["action"]
        if action not in ("approve", "reject"):
            return Response(status_code=404)
        try:
            if action == "approve":
                doors_text = f.get("doors", "").strip()
                doors = None if doors_text in ("", "*") else frozenset(d.strip() for d in doors_text.split(",") if d.strip())
                self.central.approve(reg_id, doors=doors, until=date.fromisoformat(f.get("until", "")), who=who,
                                     building=f.get("building") or None, room=f.get("room") or None, ic=f.get("ic") or None)
            else:
                self.central.reject(reg_id, who=who, note=f.get("note", ""))
        except (RegistrationError, ValueError) as exc:
            rows = self.central.registrations(who, states=("pending", "approved", "rejected"))
            return self.page(request, "registrations.html", status=400, rows=rows, error=str(exc))
        return RedirectResponse("/registrations", 303)

    async def passes(self, request: Request) -> Response:
        issued = None
        error = None
        if request.method == "POST":
            f = await self.form(request)
            try:
                doors = tuple(d.strip() for d in f.get("doors", "").split(",") if d.strip())
                issued = self.office.issue_pass(host=f.get("host", ""), doors=doors, uses=int(f.get("uses") or 1),
                                                hours=float(f.get("hours") or 2), who=self.who(request))
            except (PassError, ValueError) as exc:
                error = str(exc)
        hosts = self.office.hosts(self.who(request))
        qr = base64.b64encode(issued.png()).decode() if issued else None
        return self.page(request, "passes.html", status=400 if error else 200, passes=self.office.passes(), hosts=hosts,
                         issued=issued, qr=qr, error=error, now=time.time())

    async def revoke(self, request: Request) -> Response:
        await self.form(request)
        try:
            self.office.revoke_pass(request.path_params["pass_id"], self.who(request))
        except PassError as exc:
            return self.page(request, "passes.html", status=400, passes=self.office.passes(), hosts=[], issued=None, qr=None,
                             error=str(exc), now=time.time())
        return RedirectResponse("/passes", 303)

    async def alarms(self, request: Request) -> Response:
        return self.page(request, "alarms.html", open=self.office.alarms(), history=self.office.alarms(open_only=False)[:100])

    async def ack(self, request: Request) -> Response:
        await self.form(request)
        self.office.acknowledge(int(request.path_params["alarm_id"]), self.who(request))
        return RedirectResponse("/alarms", 303)

    async def events(self, request: Request) -> Response:
        q = request.query_params

        def day(key: str) -> float | None:
            try:
                return datetime.fromisoformat(q[key]).timestamp() if q.get(key) else None
            except ValueError:
                return None

        before = int(q["before"]) if q.get("before", "").isdigit() else None
        rows = self.office.events(door=q.get("door"), reason=q.get("reason"), since=day("since"), until=day("until"), before_rowid=before)
        return self.page(request, "events.html", rows=rows, q=q)

    async def export(self, request: Request) -> Response:
        if request.session.get("role") != "police":
            self.office.refused(self.who(request), "export_refused", "registrations")
            return self.page(request, "forbidden.html", status=403, why="police_only")
        if request.method == "GET":
            return self.page(request, "export.html")
        await self.form(request)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "registrations.csv"
            self.central.export_registrations(out, self.who(request))
            body = out.read_bytes()
        return Response(body, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="registrations-{date.today()}.csv"'})

    async def audit_log(self, request: Request) -> Response:
        return self.page(request, "audit.html", rows=self.office.audit_log())


def build(central: Central, *, secret: bytes, secure_cookies: bool = False) -> Starlette:
    console = Console(central)

    async def guard(request: Request, handler) -> Response:
        if request.url.path not in PUBLIC and not request.url.path.startswith("/lang/") and "user" not in request.session:
            return RedirectResponse("/login", 303)
        if "since" in request.session and time.time() - request.session["since"] > SESSION_S:
            request.session.clear()
            return RedirectResponse("/login", 303)
        try:
            response = await handler(request)
        except Forbidden:  # a form without the session's CSRF token
            return console.page(request, "forbidden.html", status=403, why="csrf")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        response.headers["Cache-Control"] = "no-store"
        return response

    def route(path: str, handler, methods=("GET",)) -> Route:
        async def endpoint(request: Request) -> Response:
            return await guard(request, handler)

        return Route(path, endpoint, methods=list(methods))

    routes = [
        route("/login", console.login, ("GET", "POST")),
        route("/logout", console.logout, ("POST",)),
        route("/lang/{lang}", console.lang),
        route("/", console.gateways),
        route("/residents", console.residents, ("GET", "POST")),
        route("/registrations", console.registrations),
        route("/registrations/{reg_id}/{action:str}", console.decide, ("POST",)),
        route("/passes", console.passes, ("GET", "POST")),
        route("/passes/{pass_id}/revoke", console.revoke, ("POST",)),
        route("/alarms", console.alarms),
        route("/alarms/{alarm_id:int}/ack", console.ack, ("POST",)),
        route("/events", console.events),
        route("/export", console.export, ("GET", "POST")),
        route("/audit", console.audit_log),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, secret_key=secret.hex(), max_age=SESSION_S,
                                                           same_site="strict", https_only=secure_cookies)])
