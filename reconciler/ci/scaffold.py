"""``outpost site new``: a new site folder, complete except for what only the site knows.

The scaffold borrows what the fleet already agrees on: the labels its selector
requires, the time zone and update windows most of its members use, and one
device of every type its apps need. Nothing is written that looks real but is
not: what only the installer on site can know (the node's name as the cluster
knows it, its machine id and serial, device ids and ports) is the placeholder
``REPLACE-ME``, which `outpost validate` refuses (rule ``placeholder``) until it
is replaced; a time zone taken from the fleet rather than given is marked as a
guess in a comment.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from reconciler.core.errors import ValidationError
from reconciler.core.model import NAME_RE, Repository

PLACEHOLDER = "REPLACE-ME"

_DEVICE_TEMPLATES = {
    "usb": "{name: scanner, type: usb, vendor: REPLACE-ME, product: REPLACE-ME}"
    "  # vendor and product ids as `lsusb` shows them (4 hex digits each)",
    "serial": "{name: plc-serial, type: serial, path: REPLACE-ME}"
    "  # the port, e.g. /dev/ttyS0 or /dev/serial/by-id/...",
    "gpu": "{name: gpu0, type: gpu, resource: nvidia.com/gpu, count: 1}",
    "pci": "{name: pci0, type: pci, address: REPLACE-ME, vendor: REPLACE-ME, product: REPLACE-ME}"
    "  # `lspci -nn`: address like 0000:03:00.0, ids as 4 hex digits",
}


@dataclass(frozen=True)
class Scaffold:
    """The files of a new site, as repository paths and text."""

    files: dict[str, str]


def new_site(
    repo: Repository, site_id: str, fleet_name: str, *, timezone: str | None = None
) -> Scaffold:
    if not NAME_RE.fullmatch(site_id):
        raise ValidationError(
            f"site id {site_id!r} is not valid: use lowercase letters, digits and '-' "
            "(at most 63, starting and ending with a letter or digit), e.g. de-ber-0042"
        )
    if site_id in repo.site_ids:
        raise ValidationError(f"site {site_id!r} already exists (sites/{site_id}/site.yaml)")
    fleet = repo.fleet(fleet_name)
    if fleet is None:
        known = ", ".join(repo.fleet_names) or "none"
        raise ValidationError(f"fleet {fleet_name!r} does not exist; known fleets: {known}")
    members = []
    for other in repo.site_ids:
        site = repo.site(other).site
        if fleet_name in site.fleets:
            members.append(site)
    labels = dict(fleet.selector.get("matchLabels") or {})
    zones = Counter(s.timezone for s in members)
    zone = timezone or (zones.most_common(1)[0][0] if zones else "UTC")
    zone_note = (
        ""
        if timezone
        else (
            f"  # GUESSED: the most common zone in fleet {fleet_name}; check it (or --timezone)"
            if zones
            else "  # GUESSED: fleet has no sites yet; set the site's IANA zone"
        )
    )
    site_type = Counter(s.type for s in members).most_common(1)[0][0] if members else "store"
    windows = members[0].doc.spec.get("updateWindows") if members else None
    windows = windows or [
        {
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": "23:00",
            "duration": "4h",
        }
    ]
    device_types: set[str] = set()
    for assignment in fleet.apps:
        app = repo.app(assignment.app)
        if app is not None:
            device_types.update(app.required_device_types)

    label_lines = "".join(f"    {k}: {_scalar(v)}\n" for k, v in sorted(labels.items()))
    window_lines = "".join(
        f'    - {{days: [{", ".join(w["days"])}], start: "{w["start"]}", '
        f"duration: {w['duration']}}}\n"
        for w in windows
    )
    site_yaml = (
        "apiVersion: outpost/v1\n"
        "kind: Site\n"
        "metadata:\n"
        f"  name: {site_id}\n" + ("  labels:\n" + label_lines if label_lines else "") + "spec:\n"
        f"  type: {site_type}\n"
        f"  timezone: {zone}{zone_note}\n"
        f"  fleets: [{fleet_name}]\n"
        "  connectivity: online\n"
        f"  updateWindows:  # copied from {members[0].id if members else 'a default'}; "
        "check them against the site's hours\n" + window_lines
    )
    devices = "".join(
        f"        - {_DEVICE_TEMPLATES[t]}\n"
        for t in sorted(device_types)
        if t in _DEVICE_TEMPLATES
    )
    hardware_yaml = (
        "apiVersion: outpost/v1\n"
        "kind: Hardware\n"
        "metadata:\n"
        f"  name: {site_id}\n"
        "spec:\n"
        "  nodes:\n"
        "    - name: REPLACE-ME  # the node's name in the site's cluster (`kubectl get nodes`)\n"
        "      identity: {machineId: REPLACE-ME, serial: REPLACE-ME}"
        "  # /etc/machine-id and `dmidecode -s system-serial-number`\n"
        "      arch: amd64\n"
        "      cpu: 8\n"
        "      memory: 32Gi\n" + ("      devices:\n" + devices if devices else "")
    )
    return Scaffold(
        {f"sites/{site_id}/site.yaml": site_yaml, f"sites/{site_id}/hardware.yaml": hardware_yaml}
    )


def _scalar(value: object) -> str:
    text = str(value)
    return f'"{text}"' if not text.replace("-", "").replace("_", "").isalnum() else text
