"""The SSRF guard refuses IPv6 forms that carry a private IPv4 address (NAT64, SIIT, IPv4-compatible),
for webhooks and remote inputs alike, and still lets public ones through."""

from __future__ import annotations

import ipaddress

import pytest

from security.url_guard import is_public
from tests.conftest import Gate
from tests.protocol import sd_workflow

EMBEDDING_PRIVATE = [
    "64:ff9b::7f00:1",  # NAT64 well-known prefix + 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 + 169.254.169.254 (cloud metadata)
    "64:ff9b::a00:1",  # NAT64 + 10.0.0.1
    "64:ff9b:1::a00:1",  # NAT64 local-use prefix (never public)
    "64:ff9b:1:ffff::808:808",  # local-use, whatever it embeds
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::808:808",  # IPv4-compatible, deprecated: never public
    "::ffff:0:7f00:1",  # SIIT IPv4-translated 127.0.0.1
    "::ffff:0:c0a8:101",  # SIIT 192.168.1.1
    "::ffff:7f00:1",  # IPv4-mapped (held before too)
]


@pytest.mark.parametrize("address", EMBEDDING_PRIVATE)
def test_ipv6_forms_of_private_ipv4_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_translations_stay_public() -> None:
    for address in ("64:ff9b::808:808", "::ffff:0:808:808", "2606:4700::1111", "93.184.216.34"):
        assert is_public(ipaddress.ip_address(address)), address


def test_webhooks_and_remote_inputs_refuse_them(gate: Gate) -> None:
    for address in ("64:ff9b::7f00:1", "64:ff9b:1::a00:1", "::7f00:1", "::ffff:0:7f00:1"):
        url = f"http://[{address}]:{gate.server.port}/hook"
        hook = gate.submit(sd_workflow(), webhook=url)
        assert hook.status_code == 422 and hook.json()["error"] == "url_not_allowed", (address, hook.text)
        workflow = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
        image = gate.submit(workflow, params={"1.image": f"http://[{address}]/x.png"})
        assert image.status_code == 422 and image.json()["error"] == "url_not_allowed", (address, image.text)
    assert gate.client.get("/api/tasks").json()["total"] == 0
