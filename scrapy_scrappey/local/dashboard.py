"""The live dashboard at ``GET /``: a page polling ``/__local__/stats``.

The dashboard and the ``/__local__`` routes need no key on a loopback bind;
bound elsewhere the server refuses to start without a key, and they want it.

Everything the page shows comes from the stats document, so a test that reads
``/__local__/stats`` sees what a developer watching the dashboard sees:
:func:`dashboard_data` adds the engine, the balance and one row per open
session to it; the page reads the fault settings from ``/__local__/faults``.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from scrapy_scrappey.local.engine import Engine
    from scrapy_scrappey.local.sessions import LocalSession

#: How many of the latest commands the dashboard lists.
RECENT_COMMANDS = 30


def is_loopback(host: str) -> bool:
    """Whether binding *host* keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse a non-loopback bind without a key (``ValueError``)."""
    if not api_key and not is_loopback(host):
        # Anyone reaching the port could drive the browser and read the dashboard.
        raise ValueError(
            f"binding {host!r} (not loopback) needs an API key (--api-key)"
        )


def needs_key(request: web.Request, host: str) -> bool:
    """Whether *request* is for ``/`` or ``/__local__/*`` on a non-loopback bind.

    The API routes check the key themselves, on any bind.
    """
    harness = request.path == "/" or request.path.startswith("/__local__/")
    return harness and not is_loopback(host)


def dashboard_data(
    engine: Engine, sessions: list[LocalSession], balance: float
) -> dict[str, Any]:
    """The stats fields the dashboard needs beyond the counters."""
    describe = getattr(engine, "describe", None)
    now = time.time()
    return {
        "engine": describe() if describe else {"name": "http"},
        "balance": balance,
        "session_details": [
            {
                "id": s.id,
                "engine": engine.name,
                "age": round(now - s.created_at, 1),
                "requests": s.requests,
                "last_url": s.last_url,
                "cost": s.charged,
            }
            for s in sessions
        ],
    }


DASHBOARD_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Local Scrappey</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left;
  max-width: 40em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.err { color: #b00; } .ok { color: #070; } #status { color: #888; }
</style></head>
<body>
<h1>Local Scrappey <span id="status">connecting…</span></h1>
<p>Engine: <b id="engine">?</b> · Balance: <b id="balance">?</b> ·
Sessions open: <b id="open">0</b> (created <span id="created">0</span>,
destroyed <span id="destroyed">0</span>, expired <span id="expired">0</span>,
lost <span id="lost">0</span>) · Commands: <b id="total">0</b></p>
<h2>Open sessions</h2>
<table id="sessions"><thead><tr><th>id</th><th>engine</th><th>age (s)</th>
<th>requests</th><th>last URL</th><th>cost</th></tr></thead><tbody></tbody></table>
<h2>Injected faults</h2><table id="faults"><tbody></tbody></table>
<h2>Last commands</h2>
<table id="commands"><thead><tr><th>time</th><th>command</th><th>session</th>
<th>URL</th><th>outcome</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const LIMIT = @LIMIT@;
let faults = {};
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls; td.title = td.textContent;
}
function fill(id, rows, render) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of rows) render(body.insertRow(), item);
}
function show(s) {
  for (const k of ["open", "created", "destroyed", "expired", "lost"])
    document.getElementById(k).textContent = s.sessions[k] ?? 0;
  document.getElementById("total").textContent = s.requests.total;
  document.getElementById("balance").textContent = s.balance;
  const e = s.engine;
  document.getElementById("engine").textContent =
    e.name + (e.version ? " (Chromium " + e.version + ")" : "");
  fill("sessions", s.session_details, (r, d) => {
    for (const k of ["id", "engine", "age", "requests", "last_url", "cost"]) cell(r, d[k]);
  });
  fill("faults", Object.entries(s.faults).concat(Object.entries(faults)),
    (r, [k, v]) => { cell(r, k); cell(r, JSON.stringify(v)); });
  fill("commands", s.commands.slice(-LIMIT).reverse(), (r, c) => {
    cell(r, new Date(c.t * 1000).toLocaleTimeString()); cell(r, c.cmd);
    cell(r, c.session); cell(r, c.url);
    cell(r, c.outcome ?? "…", c.outcome === "success" ? "ok" : "err");
  });
}
async function poll() {
  try {
    const reply = await fetch("/__local__/stats" + location.search);
    const config = await fetch("/__local__/faults" + location.search);
    faults = await config.json();
    show(await reply.json());
    document.getElementById("status").textContent = "live";
  } catch (err) {
    document.getElementById("status").textContent = "offline (" + err + ")";
  }
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
""".replace("@LIMIT@", str(RECENT_COMMANDS))
