"""EVerest's ``ocpp`` interface (implementation ``ocpp_generic``) on top of the bridge.

Other EVerest modules (displays, the API module, dashboards) read and write the device
model, change availability, report security events and watch variables through it. Every
method runs on the bridge's loop, like the CSMS's requests, and goes the same way they do:
get/set_variables use the device model's rules and statuses, change_availability is the
CSMS's ChangeAvailability handler. What the interface publishes leaves through the
bridge's OcppEventsPort.

Types: EVerest's GetVariableRequest/SetVariableRequest wrap component and variable in a
``component_variable``, and name the value ``value``; OCPP's (snake_case, as the `ocpp`
package and the device model use them) do not. The converters below map between the two.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from .device_model import ACTUAL, Change, VariableRef
from .station import WORK_FOLLOWS
from .timestamps import wire_timestamp

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("PyOCPP201")

# OCPP 2.0.1 appendix 1 (security events): the ones marked critical, which go to the CSMS
# when the reporter does not say otherwise
CRITICAL_SECURITY_EVENTS = frozenset(
    {
        "FirmwareUpdated",
        "SettingSystemTime",
        "StartupOfTheDevice",
        "ResetOrReboot",
        "SecurityLogWasCleared",
        "MemoryExhaustion",
        "TamperDetectionActivated",
        "MaintenanceLoginAccepted",
        "MaintenanceLoginFailed",
    }
)
TECH_INFO_MAX = 255  # SecurityEventNotificationRequest.techInfo
TECH_INFO_EVENT_MAX = 500  # EventData.tech_info


class OcppGeneric:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.monitored: set[VariableRef] = set()
        self._event_ids = itertools.count(1)
        bridge.model.on_change(self._on_change)

    # get_variables / set_variables ------------------------------------------------------

    def get_variables(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.bridge.refresh_clock()
        results = self.bridge.model.get_variables([_ocpp_entry(r) for r in requests])
        return [_everest_result(r, with_value=True) for r in results]

    def set_variables(self, requests: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        entries = [{**_ocpp_entry(r), "attribute_value": r["value"]} for r in requests]
        results, changes = self.bridge.model.set_variables(entries, source=source)
        for change in changes:
            log.info("%s set by %s: %r → %r", change.key, source, change.old, change.new)
        if changes:
            self.bridge.settings_changed()
        return [_everest_result(r, with_value=False) for r in results]

    # change_availability --------------------------------------------------------------

    async def change_availability(self, request: dict[str, Any]) -> dict[str, Any]:
        """The CSMS's ChangeAvailability path: the answer now, the work as a task after it
        (as the `ocpp` package runs the after-hook), so a slow EvseManager cannot hold up
        the caller."""
        handler = self.bridge.requests
        args = {"operational_status": request["operational_status"], "evse": request.get("evse")}
        result = handler.answer_change_availability(**args)
        if result.status in WORK_FOLLOWS:
            asyncio.get_running_loop().create_task(handler.after("ChangeAvailability", args))
        response: dict[str, Any] = {"status": str(result.status)}
        if result.status_info:
            response["status_info"] = dict(result.status_info)
        return response

    # stop / restart -------------------------------------------------------------------

    def stop(self) -> bool:
        return self.bridge.halt()

    def restart(self) -> bool:
        self.bridge.resume()
        return True

    # security_event -------------------------------------------------------------------

    def security_event(self, event: dict[str, Any]) -> None:
        """Published as the security_event var; a critical one also goes to the CSMS."""
        event = {
            **event,
            "timestamp": event.get("timestamp") or wire_timestamp(self.bridge.clock()),
        }
        critical = event.get("critical")
        if critical is None:
            critical = event["type"] in CRITICAL_SECURITY_EVENTS
        self.bridge.events.publish("security_event", event)
        if not critical:
            log.info("security event %s (not critical: not sent)", event["type"])
            return
        payload: dict[str, Any] = {"type": event["type"], "timestamp": event["timestamp"]}
        if event.get("info"):
            payload["techInfo"] = str(event["info"])[:TECH_INFO_MAX]
        self.bridge.security_event(payload)

    # monitor_variables → event_data -----------------------------------------------------

    def monitor_variables(self, component_variables: list[dict[str, Any]]) -> None:
        """Adds to the watched set. Unknown variables are logged and not watched: they can
        never change."""
        for item in component_variables:
            found = self.bridge.model.find(item["component"], item["variable"])
            if found is None:
                log.warning("monitor_variables: no device-model variable %s", _name(item))
                continue
            self.monitored.add(found.ref)

    def _on_change(self, change: Change) -> None:
        ref = VariableRef(
            change.component,
            change.variable,
            change.component_instance,
            change.evse,
            change.connector,
            change.instance,
        )
        if ref not in self.monitored:
            return
        model = self.bridge.model
        definition = model.definition(
            ref.component,
            ref.variable,
            instance=ref.variable_instance,
            evse=ref.evse,
            connector=ref.connector,
            component_instance=ref.component_instance,
        )
        # the value of a WriteOnly variable (a password) is never handed out (B06)
        value = "" if definition.mutability == "WriteOnly" else change.new
        event = {
            "component_variable": {
                "component": ref.component_dict(),
                "variable": ref.variable_dict(),
            },
            "event_id": next(self._event_ids),
            "timestamp": wire_timestamp(self.bridge.clock()),
            "trigger": "Delta",
            "actual_value": value,
            "event_notification_type": "CustomMonitor",
            "tech_info": f"set by {change.source}"[:TECH_INFO_EVENT_MAX],
        }
        self.bridge.events.publish("event_data", event)


def _ocpp_entry(request: dict[str, Any]) -> dict[str, Any]:
    cv = request["component_variable"]
    return {
        "component": cv["component"],
        "variable": cv["variable"],
        "attribute_type": request.get("attribute_type") or ACTUAL,
    }


def _everest_result(result: dict[str, Any], with_value: bool) -> dict[str, Any]:
    everest: dict[str, Any] = {
        "status": result["attribute_status"],
        "attribute_type": result["attribute_type"],
        "component_variable": {"component": result["component"], "variable": result["variable"]},
    }
    if with_value and "attribute_value" in result:
        everest["value"] = result["attribute_value"]
    return everest


def _name(item: dict[str, Any]) -> str:
    return f"{item['component'].get('name')}.{item['variable'].get('name')}"
