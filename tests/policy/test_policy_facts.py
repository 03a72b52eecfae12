"""Quantities, pod specs and site usage/capacity as CEL sees them."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policykit import deployment, hardware

from reconciler.core.policy._facts import (
    QuantityError,
    containers,
    cpu_millis,
    hardware_capacity,
    images,
    memory_bytes,
    parse_quantity,
    site_status,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("2", Fraction(2)),
        ("1.5", Fraction(3, 2)),
        ("4Gi", Fraction(4 * 1024**3)),
        ("512Mi", Fraction(512 * 1024**2)),
        ("1G", Fraction(10**9)),
        ("1e3", Fraction(1000)),
        (2, Fraction(2)),
        (0.25, Fraction(1, 4)),
    ],
)
def test_quantities(text: object, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["4GB", "1 Gi", "", "Gi", "-", True, None, "1.2.3"])
def test_not_quantities(text: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["Ki", "Mi", "Gi", "Ti"]))
def test_binary_suffixes_round_trip(number: int, suffix: str) -> None:
    power = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4}[suffix]
    assert memory_bytes(f"{number}{suffix}") == number * 1024**power


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**6))
def test_millicores_round_trip(millis: int) -> None:
    assert cpu_millis(f"{millis}m") == millis


def test_containers_and_images_of_every_workload_kind() -> None:
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "initContainers": [{"name": "i", "image": "a"}],
                            "containers": [{"name": "c", "image": "b"}],
                        }
                    }
                }
            }
        },
    }
    assert [c["name"] for c in containers(cron)] == ["i", "c"]
    assert images(cron) == ["a", "b"]
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "spec": {
            "template": {"spec": {"volumes": [{"name": "d", "containerDisk": {"image": "v"}}]}}
        },
    }
    assert images(vm) == ["v"]
    assert containers({"apiVersion": "v1", "kind": "ConfigMap"}) == []


def test_usage_counts_replicas_daemonsets_init_containers_and_vms() -> None:
    web = deployment(resources={"requests": {"cpu": "500m", "memory": "1Gi"}})
    web["spec"]["replicas"] = 2
    ds = deployment(resources={"limits": {"cpu": "100m", "memory": "64Mi", "nvidia.com/gpu": 1}})
    ds["kind"] = "DaemonSet"
    ds["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "init", "resources": {"requests": {"cpu": "1", "memory": "16Mi"}}}
    ]
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "spec": {
            "runStrategy": "Always",
            "template": {
                "spec": {
                    "domain": {
                        "cpu": {"cores": 2},
                        "memory": {"guest": "4Gi"},
                        "resources": {"requests": {"memory": "4Gi"}},
                        "devices": {"hostDevices": [{"name": "p", "deviceName": "x.io/serial-p"}]},
                    }
                }
            },
        },
    }
    halted = {**vm, "spec": {**vm["spec"], "runStrategy": "Halted"}}
    two_nodes = hardware(cpu=8, memory="16Gi")
    two_nodes["spec"]["nodes"].append(
        {
            "name": "edge-2",
            "cpu": 8,
            "memory": "16Gi",
            "devices": [{"name": "gpu0", "type": "gpu", "resource": "nvidia.com/gpu", "count": 2}],
        }
    )
    status, problems = site_status([web, ds, vm, halted], two_nodes)
    assert problems == []
    usage = status["usage"]
    # web 2 × 500m; DaemonSet max(100m, init 1000m) × 2 nodes; VM 2 cores; halted VM nothing
    assert usage["cpuMillis"] == 1000 + 2000 + 2000
    assert usage["memoryBytes"] == 2 * 1024**3 + 2 * 64 * 1024**2 + 4 * 1024**3
    assert usage["resources"] == {"nvidia.com/gpu": 2, "x.io/serial-p": 1}
    capacity = status["capacity"]
    assert capacity["cpuMillis"] == 16000 and capacity["nodes"] == 2
    assert capacity["memoryBytes"] == 32 * 1024**3
    assert capacity["resources"] == {"nvidia.com/gpu": 2}


def test_unreadable_quantity_is_reported_not_zero() -> None:
    bad = deployment(resources={"requests": {"memory": "4GB"}})
    _status, problems = site_status([bad], hardware())
    assert [p.index for p in problems] == [0]
    assert "4GB" in problems[0].message


def test_capacity_names_devices_as_render_passes_them_through() -> None:
    hw = hardware(devices=[{"name": "plc", "type": "serial", "path": "/dev/ttyS0"}])
    capacity = hardware_capacity(hw)
    assert capacity["devices"] == ["plc"] and capacity["deviceTypes"] == ["serial"]
    assert list(capacity["resources"]) == ["devices.outpost.io/serial-plc"]
