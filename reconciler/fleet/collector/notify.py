"""Webhooks for fleets without Prometheus: one message when an alert fires, one when it resolves.

The same conditions as the shipped Prometheus rules (``deploy/alerts.yaml``),
evaluated from the store after every background refresh:

- ``refused``: a site refused a candidate (one alert per site and commit);
- ``rolled-back``: a site rolled back (per site and failed commit);
- ``failing``: a site's health failed or applying was interrupted;
- ``source-stale``: a site's git remote or bundle inbox went quiet for days;
- ``silent``: a site that reported before is silent past its threshold.

De-duplication is in the database (`Store.claim_alert`): the collector that
records a change of an alert is the one that sends it, so an alert is sent
once however often it is evaluated and however many collectors share the
store. A message that could not be delivered releases its claim and is sent
again at the next evaluation.

Two body styles: ``json`` (``{"status": "firing"|"resolved", "alert", "site",
"detail", "since"}``) and ``slack`` (``{"text": …}``, which Slack's incoming
webhooks and Mattermost accept).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from reconciler.fleet.collector.fleetview import FleetView
from reconciler.fleet.collector.rollout import site_state, source_stale
from reconciler.fleet.collector.store import SiteRecord

if TYPE_CHECKING:
    from reconciler.fleet.collector.app import Collector

__all__ = ["Notifier", "firing_alerts", "headline", "message"]

log = logging.getLogger("outpost.notify")

Post = Callable[[str, bytes], None]


def firing_alerts(
    records: Mapping[str, SiteRecord], view: FleetView | None, now: datetime
) -> dict[str, str]:
    """Alert key (``<alert>/<site>[/<commit>]``) → detail, for every alert firing now."""
    firing: dict[str, str] = {}
    for site, record in sorted(records.items()):
        info = view.sites.get(site) if view else None
        state = site_state(record, info, now)
        if state == "refused":
            firing[f"refused/{site}/{record.pending or ''}"] = (
                f"{site} refused {(record.pending or '?')[:12]}: {record.pending_reason}"
            )
        elif state == "rolled-back":
            failed = record.failed[-1] if record.failed else record.pending or ""
            firing[f"rolled-back/{site}/{failed}"] = (
                f"{site} rolled back {failed[:12]}: {record.last_error or record.pending_reason}"
            )
        elif state == "failing":
            firing[f"failing/{site}"] = (
                f"{site} health {record.health}: {record.last_error or record.outcome}"
            )
        elif state == "silent":
            firing[f"silent/{site}"] = f"{site} last reported at {record.time.isoformat()}"
        if state != "silent" and source_stale(record, now):
            firing[f"source-stale/{site}"] = (
                f"{site}'s source last answered {record.source_answered or 'never'}"
            )
    return firing


def headline(status: str, key: str, detail: str) -> str:
    """An alert in one line, as the Slack-style webhook and the dashboard both word it."""
    alert, _, rest = key.partition("/")
    site = rest.split("/", 1)[0]
    return f"[{status.upper()}] outpost {alert} at {site}: {detail}"


def message(style: str, status: str, key: str, detail: str, since: datetime) -> bytes:
    alert, _, rest = key.partition("/")
    site = rest.split("/", 1)[0]
    if style == "slack":
        mark = ":red_circle:" if status == "firing" else ":white_check_mark:"
        text = f"{mark} {headline(status, key, detail)}"
        return json.dumps({"text": text}).encode()
    body: dict[str, Any] = {
        "status": status,
        "alert": alert,
        "site": site,
        "key": key,
        "detail": detail,
        "since": since.isoformat(),
    }
    return json.dumps(body, sort_keys=True).encode()


def _urllib3_post(url: str, body: bytes) -> None:
    import urllib3

    try:
        response = urllib3.request(
            "POST",
            url,
            body=body,
            headers={"Content-Type": "application/json"},
            timeout=urllib3.Timeout(connect=3.0, read=5.0),
            retries=False,
            redirect=False,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise OSError(f"{url} did not answer: {exc}") from None
    if not 200 <= response.status < 300:
        raise OSError(f"{url} answered {response.status}")


class Notifier:
    """Evaluates alerts and posts changes to every webhook URL."""

    def __init__(self, urls: Sequence[str], *, style: str = "json", post: Post | None = None):
        self.urls = tuple(urls)
        self.style = style
        self.post = post or _urllib3_post

    def evaluate(self, collector: Collector) -> list[tuple[str, str]]:
        """Send what changed since the last evaluation; the (status, key) pairs sent."""
        now = collector.clock()
        firing = firing_alerts(collector.records(), collector.source.status.view, now)
        store = collector.store
        known = store.alerts()
        sent: list[tuple[str, str]] = []
        for key in sorted(set(firing) - set(known)):
            if store.claim_alert(key, firing=True, now=now, detail=firing[key]):
                if self._send("firing", key, firing[key], now):
                    sent.append(("firing", key))
                else:
                    store.claim_alert(key, firing=False, now=now, detail="")
        for key in sorted(set(known) - set(firing)):
            since, detail = known[key]
            if store.claim_alert(key, firing=False, now=now, detail=""):
                if self._send("resolved", key, detail, since):
                    sent.append(("resolved", key))
                else:
                    store.claim_alert(key, firing=True, now=since, detail=detail)
        return sent

    def _send(self, status: str, key: str, detail: str, since: datetime) -> bool:
        body = message(self.style, status, key, detail, since)
        delivered = True
        for url in self.urls:
            try:
                self.post(url, body)
            except OSError as exc:
                delivered = False
                log.error("webhook failed", extra={"url": url, "error": str(exc)})
        return delivered
