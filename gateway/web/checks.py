"""The page's commissioning check: `cgw check`'s judgements on what the running gateway sees now
(no extra bus traffic): every device answering, its values plausible, no reversed CT, counters
moving, buses keeping up, the broker connected, the clock synchronised."""

from __future__ import annotations

from typing import Any

from gateway.tools.check import FAIL, OK, WARN, Finding, verdict


def page_check(view: dict[str, Any]) -> dict[str, Any]:
    findings: list[Finding] = []
    for device in view.get("devices", []):
        if device["answering"]:
            findings.append(
                Finding(OK, device["id"], "answers", f"{device['latency_ms'] or 0:.0f} ms")
            )
        else:
            why = device.get("error") or device.get("quality") or "not polled yet"
            findings.append(Finding(FAIL, device["id"], "answers", str(why)))
        findings += [
            Finding(w["status"], device["id"], w["check"], w["detail"]) for w in device["warnings"]
        ]
    for bus, health in (view.get("buses") or {}).items():
        keeps_up = health.get("keeps_up", True)
        findings.append(
            Finding(
                OK if keeps_up else WARN,
                bus,
                "keeps up",
                f"demand {health.get('demand', 0):.0%} of the bus time",
            )
        )
    gateway = view.get("gateway", {})
    uplink = gateway.get("uplink", {})
    if uplink.get("enabled"):
        connected = bool(uplink.get("connected"))
        detail = "connected" if connected else (uplink.get("last_error") or "not connected")
        findings.append(Finding(OK if connected else FAIL, "broker", "connected", detail))
    synced = gateway.get("clock_synced")
    findings.append(
        Finding(
            OK if synced else WARN, "clock", "synchronised", "yes" if synced else "not yet (NTP)"
        )
    )
    return {
        "verdict": verdict(findings),
        "findings": [f.__dict__ for f in findings],
    }
