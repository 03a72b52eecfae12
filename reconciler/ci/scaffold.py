"""``outpost site new``: a new site folder that validates the moment it is written.

The scaffold borrows what the fleet already agrees on: the labels its selector
requires, the time zone and update windows most of its members use, and one
device of every type its apps need. What only the installer on site can know
(machine id, serial, device ids) is marked ``# TODO`` so review catches it.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass

from reconciler.core.errors import ValidationError
from reconciler.core.model import NAME_RE, Repository

_DEVICE_TEMPLATES = {
    "usb": '{name: scanner, type: usb, vendor: "05e0", product: "1200"}  # TODO: lsusb',
    "serial": "{name: plc-serial, type: serial, path: /dev/ttyS0}  # TODO: check the port",
    "gpu": "{name: gpu0, type: gpu, resource: nvidia.com/gpu, count: 1}",
    "pci": '{name: pci0, type: pci, address: "0000:03:00.0", vendor: "8086", product: "1533"}',
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
        f"  timezone: {zone}\n"
        f"  fleets: [{fleet_name}]\n"
        "  connectivity: online\n"
        "  updateWindows:\n" + window_lines
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
        "    - name: edge-1\n"
        f'      identity: {{machineId: "{secrets.token_hex(16)}", serial: TODO}}'
        "  # TODO: /etc/machine-id and the chassis serial\n"
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
