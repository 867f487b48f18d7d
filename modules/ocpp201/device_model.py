"""The OCPP 2.0.1 device model of this charging station: components, variables, values.

Pure: no IO. Values the CSMS sets go out through the ``persist(key, value)`` callback (the
bridge passes ``Store.save_variable``); values stored earlier come in as ``stored`` (from
``Store.load_variables()``). Only the ``Actual`` attribute exists; every value is kept as its
OCPP string ("true"/"false", "10", "EVConnected,Authorized").

Requests and results are snake_case dicts, the way the ``ocpp`` package hands CSMS requests to
handlers and takes nested results back (it converts keys to camelCase on the wire).

Keys
----
One string names a variable, both in ``overrides`` and in the store::

    Component[(instance)][[evse[,connector]]].Variable[(instance)]

    OCPPCommCtrlr.HeartbeatInterval           component without instance or EVSE
    OCPPCommCtrlr.MessageTimeout(Default)     variable instance in parentheses
    EVSE[1].Power                             EVSE 1
    Connector[1,1].ConnectorType              EVSE 1, connector 1
    SmartChargingCtrlr.Entries(ChargingProfiles)

Which value wins: stored (persistent writable variables only) > override > default.

The standard model (``DeviceModel.standard``)
---------------------------------------------
R = ReadOnly, RW = ReadWrite (all persistent), W = WriteOnly; units in brackets.

ChargingStation   Available R true; AvailabilityState R OptionList Available (the bridge
                  keeps it current); SupplyPhases R 0 (DC); Model, VendorName R (identity)
EVSE[n]           Available R true; AvailabilityState R Available; SupplyPhases R 0;
                  Power R decimal [W] 0, maxLimit set by the bridge (``set_max_limit``)
Connector[n,c]    Available R true; AvailabilityState R Available; ConnectorType R (from the
                  shape, default cCCS2);
                  SupplyPhases R 0
OCPPCommCtrlr     HeartbeatInterval RW 300 [s] (min 1); MessageTimeout(Default) RW 30 [s]
                  (min 1); MessageAttempts(TransactionEvent) RW 3 (min 0);
                  MessageAttemptInterval(TransactionEvent) RW 10 [s]; OfflineThreshold RW 60
                  [s]; ResetRetries RW 2; RetryBackOffRandomRange RW 10 [s];
                  RetryBackOffRepeatTimes RW 5; RetryBackOffWaitMinimum RW 3 [s];
                  WebSocketPingInterval RW 30 [s] (0 = off); FileTransferProtocols R
                  MemberList "" (none supported); NetworkConfigurationPriority R "0"
                  (integers without a stated minimum have min 0)
SecurityCtrlr     Identity R (station id); SecurityProfile R (0..3); BasicAuthPassword W
                  string 16..40 characters, reboot required, default "" = not configured;
                  OrganizationName RW ""
TxCtrlr           TxStartPoint RW MemberList PowerPathClosed; TxStopPoint RW MemberList
                  EVConnected,Authorized (members EVConnected, Authorized, PowerPathClosed,
                  EnergyTransfer); EVConnectionTimeOut RW 60 [s]; StopTxOnEVSideDisconnect R
                  true; StopTxOnInvalidId RW true; MaxEnergyOnInvalidId RW 0 [Wh];
                  TxBeforeAcceptedEnabled R false
SampledDataCtrlr  Enabled RW true; TxUpdatedInterval RW 60 [s]; TxEndedInterval RW 0 [s];
                  TxStartedMeasurands RW Energy.Active.Import.Register; TxUpdatedMeasurands
                  RW Energy.Active.Import.Register,Power.Active.Import,Current.Import,
                  Voltage,SoC; TxEndedMeasurands RW Energy.Active.Import.Register
                  (members: those five plus Current.Offered, Power.Offered)
AuthCtrlr         Enabled RW true; AuthorizeRemoteStart RW false; LocalAuthorizeOffline RW
                  true; LocalPreAuthorize RW false; OfflineTxForUnknownIdEnabled RW false
SmartChargingCtrlr Enabled RW true; Available R true; ACPhaseSwitchingSupported R false;
                  Entries(ChargingProfiles) R 0 (kept current by ``profiles``);
                  LimitChangeSignificance RW decimal 10 [Percent] (0..100);
                  NotifyChargingLimitWithSchedules RW false; PeriodsPerSchedule R 24;
                  ProfileStackLevel R 10; RateUnit R MemberList A,W;
                  ExternalControlSignalsEnabled RW true; CompositeScheduleDefaultLimitAmps
                  RW 48 [A]; CompositeScheduleDefaultLimitWatts RW 33120 [W];
                  CompositeScheduleDefaultNumberPhases RW 3 (1..3); SupplyVoltage RW 230 [V]
DeviceDataCtrlr   ItemsPerMessage(GetReport|GetVariables|SetVariables) R 20;
                  BytesPerMessage(GetReport|GetVariables|SetVariables) R 65535
ClockCtrlr        DateTime R dateTime, "" until the bridge sets it (``set_internal``);
                  TimeSource RW SequenceList Heartbeat (the only source offered)

Left out, because the bridge does not support them: ReservationCtrlr, LocalAuthListCtrlr,
AuthCacheCtrlr, TariffCostCtrlr, DisplayMessageCtrlr, MonitoringCtrlr, CHAdeMOCtrlr,
ISO15118Ctrlr, CustomizationCtrlr, and NetworkConfiguration slots as components.

Limits: for integer/decimal ``min_limit``/``max_limit`` bound the value; for string they bound
its length (OCPP defines maxLimit so; minLimit as a minimum length is our reading, needed for
BasicAuthPassword's 16 characters). Defaults are ours and are not checked against limits (an
empty BasicAuthPassword means "not configured"); overrides and stored values are.

GetReport (``report_criteria``): a componentVariable entry matches by component name; its
instance, EVSE id and connector id narrow the match only when given, and a missing variable
means every variable of the component. componentCriteria select components whose
``Available``/``Enabled``/``Active``/``Problem`` variable is "true" (we have no Active or
Problem variables). When both are given, a variable must satisfy both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, TypedDict, TypeVar, Unpack

from ..framework.errors import ConfigError, EverkitError

DataType = Literal[
    "boolean",
    "integer",
    "decimal",
    "string",
    "dateTime",
    "OptionList",
    "MemberList",
    "SequenceList",
]
Mutability = Literal["ReadOnly", "ReadWrite", "WriteOnly"]

ACTUAL = "Actual"
STATION = "Station"  # Change.source of values the station sets itself
CSMS = "CSMS"
LIST_TYPES = ("OptionList", "MemberList", "SequenceList")
# Components and variables a SummaryInventory reports (OCPP B07: the availability of the
# station, its EVSEs and connectors).
SUMMARY_COMPONENTS = ("ChargingStation", "EVSE", "Connector")
SUMMARY_VARIABLES = ("Available", "AvailabilityState")
# GetReport's componentCriteria; each selects the components whose variable of that name
# is "true".
COMPONENT_CRITERIA = ("Active", "Available", "Enabled", "Problem")

AVAILABILITY_STATES = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
AVAILABILITY_PRIORITY = ("Occupied", "Reserved", "Available", "Unavailable", "Faulted")

_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")

T = TypeVar("T")


class Where(TypedDict, total=False):
    """Which instance of a variable: its instance, EVSE, connector, component instance."""

    instance: str | None
    evse: int | None
    connector: int | None
    component_instance: str | None


def _ref(component: str, variable: str, where: Where) -> VariableRef:
    return VariableRef(
        component,
        variable,
        where.get("component_instance"),
        where.get("evse"),
        where.get("connector"),
        where.get("instance"),
    )


class DeviceModelError(EverkitError):
    """A device-model variable was used the wrong way (wrong type, bad value)."""


class UnknownVariable(DeviceModelError, KeyError):
    """No such component/variable in this station's device model."""

    def __str__(self) -> str:
        # KeyError would repr() the message; this one is meant to be read.
        return str(self.args[0]) if self.args else ""


class InvalidValue(DeviceModelError, ValueError):
    """A value does not fit the variable's data type, limits or values list."""

    def __init__(self, message: str, reason_code: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code  # OCPP reasonCode: InvalidValue or ValueOutOfRange


@dataclass(frozen=True)
class VariableRef:
    """Where a variable lives: component (+instance, EVSE, connector) and variable (+instance)."""

    component: str
    variable: str
    component_instance: str | None = None
    evse: int | None = None
    connector: int | None = None
    variable_instance: str | None = None

    @property
    def key(self) -> str:
        """The variable's name in overrides and in the store (see the module docstring)."""
        component = self.component
        if self.component_instance is not None:
            component += f"({self.component_instance})"
        if self.evse is not None:
            address = str(self.evse) if self.connector is None else f"{self.evse},{self.connector}"
            component += f"[{address}]"
        variable = self.variable
        if self.variable_instance is not None:
            variable += f"({self.variable_instance})"
        return f"{component}.{variable}"

    def component_dict(self) -> dict[str, Any]:
        """The OCPP ComponentType of this variable (snake_case)."""
        component: dict[str, Any] = {"name": self.component}
        if self.component_instance is not None:
            component["instance"] = self.component_instance
        if self.evse is not None:
            component["evse"] = {"id": self.evse}
            if self.connector is not None:
                component["evse"]["connector_id"] = self.connector
        return component

    def variable_dict(self) -> dict[str, Any]:
        """The OCPP VariableType of this variable."""
        variable: dict[str, Any] = {"name": self.variable}
        if self.variable_instance is not None:
            variable["instance"] = self.variable_instance
        return variable

    @property
    def component_address(self) -> tuple[str, str | None, int | None, int | None]:
        return (self.component, self.component_instance, self.evse, self.connector)


@dataclass(frozen=True)
class VariableDef:
    """One variable of the model, its characteristics and its default (an OCPP string)."""

    component: str
    variable: str
    data_type: DataType
    mutability: Mutability
    default: str
    component_instance: str | None = None
    evse: int | None = None
    connector: int | None = None
    variable_instance: str | None = None
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    values_list: tuple[str, ...] | None = None
    persistent: bool = False  # a value set by the CSMS is stored and survives a restart
    reboot_required: bool = False  # SetVariables answers RebootRequired (value still stored)
    constant: bool = False  # the station never changes the value at runtime

    @property
    def ref(self) -> VariableRef:
        return VariableRef(
            self.component,
            self.variable,
            self.component_instance,
            self.evse,
            self.connector,
            self.variable_instance,
        )

    @property
    def key(self) -> str:
        return self.ref.key


@dataclass(frozen=True)
class Change:
    """A value that changed, so the bridge can react (a new HeartbeatInterval, ...)."""

    component: str
    variable: str
    instance: str | None  # the variable's instance
    evse: int | None
    connector: int | None
    component_instance: str | None
    old: str
    new: str
    # who set it: the CSMS, the station, a module's set_variables (metadata, not the value)
    source: str = field(default=STATION, compare=False)

    @property
    def key(self) -> str:
        return VariableRef(
            self.component,
            self.variable,
            self.component_instance,
            self.evse,
            self.connector,
            self.instance,
        ).key


@dataclass(frozen=True)
class EvseShape:
    id: int
    connectors: Sequence[int] = (1,)


@dataclass(frozen=True)
class StationShape:
    """What the station physically is and how it identifies itself."""

    station_id: str
    vendor_name: str
    model: str
    evses: Sequence[EvseShape] = (EvseShape(1),)
    serial_number: str | None = None
    firmware_version: str | None = None
    security_profile: int = 0
    supply_phases: int = 0  # 0 = DC
    connector_type: str = "cCCS2"  # OCPP ConnectorEnumType, same for every connector

    def __post_init__(self) -> None:
        ids = [evse.id for evse in self.evses]
        if ids != list(range(1, len(ids) + 1)):
            raise ConfigError(f"EVSE ids must be 1..n in order, got {ids}", key="evses")
        for evse in self.evses:
            if not evse.connectors or len(set(evse.connectors)) != len(evse.connectors):
                raise ConfigError(
                    f"EVSE {evse.id} needs distinct connector ids, got {evse.connectors}",
                    key="evses",
                )
            if min(evse.connectors) < 1:
                raise ConfigError(f"EVSE {evse.id}: connector ids start at 1", key="evses")
        if self.security_profile not in (0, 1, 2, 3):
            raise ConfigError(
                f"security profile must be 0..3, got {self.security_profile}",
                key="security_profile",
            )


def chunks(items: Sequence[T], per_message: int) -> list[list[T]]:
    """Split report data into NotifyReport-sized parts (all but the last go with tbc=true).

    No items give no parts: the caller answers GetBaseReport/GetReport with EmptyResultSet.
    """
    if per_message < 1:
        raise ValueError(f"per_message must be at least 1, got {per_message}")
    return [list(items[start : start + per_message]) for start in range(0, len(items), per_message)]


def _no_persist(_key: str, _value: str) -> None:
    pass


class DeviceModel:
    """The variables of one station and their current values."""

    def __init__(
        self,
        definitions: Iterable[VariableDef],
        *,
        overrides: Mapping[str, str] | None = None,
        stored: Mapping[str, str] | None = None,
        persist: Callable[[str, str], None] = _no_persist,
    ) -> None:
        self._persist = persist
        self._listeners: list[Callable[[Change], None]] = []
        self._defs: dict[VariableRef, VariableDef] = {}
        for definition in definitions:
            if definition.ref in self._defs:
                raise ValueError(f"variable {definition.key} defined twice")
            self._defs[definition.ref] = definition
        self._by_key = {ref.key: ref for ref in self._defs}
        self._components = {ref.component_address for ref in self._defs}
        self._values = {ref: definition.default for ref, definition in self._defs.items()}

        for key, value in (overrides or {}).items():
            ref = self._by_key.get(key)
            if ref is None:
                raise ConfigError("no such device-model variable", key=key)
            try:
                self._values[ref] = _normalise(self._defs[ref], value)
            except InvalidValue as error:
                raise ConfigError(str(error), key=key) from error

        ignored: list[str] = []
        for key, value in (stored or {}).items():
            ref = self._by_key.get(key)
            if ref is None or not _restorable(self._defs[ref]):
                ignored.append(key)
                continue
            try:
                self._values[ref] = _normalise(self._defs[ref], value)
            except InvalidValue:
                ignored.append(key)
        # Stored keys that no longer fit this model (renamed, now read-only, out of new
        # limits): the bridge should log them; they are left in the store untouched.
        self.ignored_stored: tuple[str, ...] = tuple(ignored)

    @classmethod
    def standard(
        cls,
        station: StationShape,
        overrides: Mapping[str, str] | None = None,
        *,
        stored: Mapping[str, str] | None = None,
        persist: Callable[[str, str], None] = _no_persist,
    ) -> DeviceModel:
        """The model this station really has (listed in the module docstring)."""
        return cls(
            standard_definitions(station), overrides=overrides, stored=stored, persist=persist
        )

    chunks = staticmethod(chunks)

    def on_change(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` with every change of a value, whoever made it (monitors)."""
        self._listeners.append(listener)

    def find(self, component: Mapping[str, Any], variable: Mapping[str, Any]) -> VariableDef | None:
        """The variable an OCPP ComponentType/VariableType pair (snake_case) names, if any."""
        found = self._resolve(component, variable, ACTUAL)
        return None if isinstance(found, str) else found

    # reading values inside the bridge (WriteOnly values included: the bridge needs them)

    def basic_auth_password(self) -> str | None:
        """SecurityCtrlr.BasicAuthPassword, or None while it is not configured."""
        return self.get_str("SecurityCtrlr", "BasicAuthPassword") or None

    def definitions(self) -> list[VariableDef]:
        return list(self._defs.values())

    def definition(self, component: str, variable: str, **where: Unpack[Where]) -> VariableDef:
        ref = _ref(component, variable, where)
        definition = self._defs.get(ref)
        if definition is None:
            raise UnknownVariable(f"no device-model variable {ref.key}")
        return definition

    def get_str(self, component: str, variable: str, **where: Unpack[Where]) -> str:
        return self._values[self.definition(component, variable, **where).ref]

    def get_bool(self, component: str, variable: str, **where: Unpack[Where]) -> bool:
        return self._typed(_ref(component, variable, where), ("boolean",)) == "true"

    def get_int(self, component: str, variable: str, **where: Unpack[Where]) -> int:
        return int(self._typed(_ref(component, variable, where), ("integer",)))

    def get_float(self, component: str, variable: str, **where: Unpack[Where]) -> float:
        return float(self._typed(_ref(component, variable, where), ("integer", "decimal")))

    def get_list(self, component: str, variable: str, **where: Unpack[Where]) -> list[str]:
        """The members of a MemberList/SequenceList/OptionList value, in order."""
        value = self._typed(_ref(component, variable, where), LIST_TYPES)
        return value.split(",") if value else []

    def _typed(self, ref: VariableRef, allowed: tuple[str, ...]) -> str:
        definition = self._defs.get(ref)
        if definition is None:
            raise UnknownVariable(f"no device-model variable {ref.key}")
        if definition.data_type not in allowed:
            raise DeviceModelError(
                f"{ref.key} is {definition.data_type}, not {' or '.join(allowed)}"
            )
        return self._values[ref]

    # values the station itself updates

    def set_internal(
        self, component: str, variable: str, value: str, **where: Unpack[Where]
    ) -> Change | None:
        """Set a value as the station (any mutability). Persisted only if the variable is
        persistent. Returns the change, or None if the value stayed the same."""
        definition = self.definition(component, variable, **where)
        return self._assign(definition, _normalise(definition, value))

    def set_availability(self, evse: int, connector: int, state: str) -> list[Change]:
        """Record a connector's status (a ConnectorStatusEnumType value) as its
        AvailabilityState, and the EVSE's state that follows from its connectors.

        The EVSE takes its connectors' state when they agree, else the busiest one
        (Occupied > Reserved > Available > Unavailable > Faulted). The station's own state is
        left alone: only ChangeAvailability for the whole station changes it.
        """
        changes = [
            self.set_internal(
                "Connector", "AvailabilityState", state, evse=evse, connector=connector
            )
        ]
        states = {
            self._values[ref]
            for ref in self._defs
            if ref.component == "Connector"
            and ref.evse == evse
            and ref.variable == "AvailabilityState"
        }
        busiest = next(s for s in AVAILABILITY_PRIORITY if s in states)
        changes.append(self.set_internal("EVSE", "AvailabilityState", busiest, evse=evse))
        return [change for change in changes if change is not None]

    def set_max_limit(
        self, component: str, variable: str, max_limit: float | None, **where: Unpack[Where]
    ) -> None:
        """Change a variable's maxLimit (e.g. EVSE.Power once the power supply is known)."""
        definition = self.definition(component, variable, **where)
        self._defs[definition.ref] = replace(definition, max_limit=max_limit)

    def _assign(self, definition: VariableDef, value: str, source: str = STATION) -> Change | None:
        ref = definition.ref
        old = self._values[ref]
        if definition.persistent:
            # Persist first: if the store fails, memory still agrees with the store.
            self._persist(ref.key, value)
        self._values[ref] = value
        if old == value:
            return None
        change = Change(
            ref.component,
            ref.variable,
            ref.variable_instance,
            ref.evse,
            ref.connector,
            ref.component_instance,
            old,
            value,
            source,
        )
        for listener in self._listeners:
            listener(change)
        return change

    # GetVariables / SetVariables (OCPP B06 / B05)

    def get_variables(self, get_variable_data: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One GetVariableResult per request entry, in request order (B06.FR.01)."""
        return [self._get_one(entry) for entry in get_variable_data]

    def _lookup(self, entry: Mapping[str, Any]) -> tuple[dict[str, Any], VariableDef | None]:
        """The result skeleton echoing the request, and the variable (None when the result
        already says why there is none)."""
        attribute_type = entry.get("attribute_type") or ACTUAL
        result: dict[str, Any] = {
            "attribute_type": attribute_type,
            "component": dict(entry["component"]),
            "variable": dict(entry["variable"]),
        }
        found = self._resolve(entry["component"], entry["variable"], attribute_type)
        if isinstance(found, str):
            result["attribute_status"] = found
            result["attribute_status_info"] = _status_info(found)
            return result, None
        return result, found

    def _get_one(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        result, found = self._lookup(entry)
        if found is None:
            return result
        if found.mutability == "WriteOnly":
            result["attribute_status"] = "Rejected"
            result["attribute_status_info"] = {
                "reason_code": "WriteOnly",
                "additional_info": "the value of a WriteOnly variable is never returned",
            }
            return result
        result["attribute_status"] = "Accepted"
        result["attribute_value"] = self._values[found.ref]
        return result

    def set_variables(
        self, set_variable_data: Sequence[Mapping[str, Any]], source: str = CSMS
    ) -> tuple[list[dict[str, Any]], list[Change]]:
        """One SetVariableResult per request entry (B05.FR.01), and the changes made.

        Entries are applied in order; each accepted value is persisted before this returns.
        """
        results: list[dict[str, Any]] = []
        changes: list[Change] = []
        for entry in set_variable_data:
            result, change = self._set_one(entry, source)
            results.append(result)
            if change is not None:
                changes.append(change)
        return results, changes

    def _set_one(
        self, entry: Mapping[str, Any], source: str
    ) -> tuple[dict[str, Any], Change | None]:
        result, found = self._lookup(entry)
        if found is None:
            return result, None
        if found.mutability == "ReadOnly":
            result["attribute_status"] = "Rejected"
            result["attribute_status_info"] = {
                "reason_code": "ReadOnly",
                "additional_info": f"{found.key} is read-only",
            }
            return result, None
        try:
            value = _normalise(found, str(entry["attribute_value"]))
        except InvalidValue as error:
            result["attribute_status"] = "Rejected"
            result["attribute_status_info"] = {
                "reason_code": error.reason_code,
                "additional_info": str(error)[:512],
            }
            return result, None
        change = self._assign(found, value, source)
        result["attribute_status"] = "RebootRequired" if found.reboot_required else "Accepted"
        return result, change

    def _resolve(
        self, component: Mapping[str, Any], variable: Mapping[str, Any], attribute_type: str
    ) -> VariableDef | str:
        """The variable a request names, or the status that says why there is none."""
        evse = component.get("evse") or {}
        address = (
            component["name"],
            component.get("instance"),
            evse.get("id"),
            evse.get("connector_id"),
        )
        if address not in self._components:
            return "UnknownComponent"
        ref = VariableRef(
            address[0],
            variable["name"],
            address[1],
            address[2],
            address[3],
            variable.get("instance"),
        )
        definition = self._defs.get(ref)
        if definition is None:
            return "UnknownVariable"
        if attribute_type != ACTUAL:
            return "NotSupportedAttributeType"
        return definition

    # reports (OCPP B07 GetBaseReport, B08 GetReport)

    def report(self, report_base: str) -> list[dict[str, Any]]:
        """ReportData for a GetBaseReport; empty for an unknown report base."""
        if report_base == "FullInventory":
            chosen = list(self._defs.values())
        elif report_base == "ConfigurationInventory":
            chosen = [d for d in self._defs.values() if d.mutability != "ReadOnly"]
        elif report_base == "SummaryInventory":
            chosen = [
                d
                for d in self._defs.values()
                if d.component in SUMMARY_COMPONENTS
                and d.component_instance is None
                and d.variable in SUMMARY_VARIABLES
                and d.variable_instance is None
            ]
        else:
            chosen = []
        return [self._report_data(d) for d in chosen]

    def report_criteria(
        self,
        component_criteria: Sequence[str] | None,
        component_variable: Sequence[Mapping[str, Any]] | None,
    ) -> list[dict[str, Any]]:
        """ReportData for a GetReport (matching rules in the module docstring)."""
        chosen = list(self._defs.values())
        if component_variable:
            chosen = [d for d in chosen if any(_matches(d, cv) for cv in component_variable)]
        if component_criteria:
            selected = self._components_meeting(component_criteria)
            chosen = [d for d in chosen if d.ref.component_address in selected]
        return [self._report_data(d) for d in chosen]

    def _components_meeting(self, criteria: Sequence[str]) -> set[tuple[Any, ...]]:
        names = {criterion for criterion in criteria if criterion in COMPONENT_CRITERIA}
        return {
            ref.component_address
            for ref, definition in self._defs.items()
            if ref.variable in names
            and ref.variable_instance is None
            and definition.data_type == "boolean"
            and self._values[ref] == "true"
        }

    def _report_data(self, definition: VariableDef) -> dict[str, Any]:
        ref = definition.ref
        attribute: dict[str, Any] = {"type": ACTUAL}
        if definition.mutability != "WriteOnly":
            attribute["value"] = self._values[ref]
        attribute["mutability"] = definition.mutability
        attribute["persistent"] = definition.persistent
        attribute["constant"] = definition.constant
        characteristics: dict[str, Any] = {
            "data_type": definition.data_type,
            "supports_monitoring": False,
        }
        if definition.unit is not None:
            characteristics["unit"] = definition.unit
        if definition.min_limit is not None:
            characteristics["min_limit"] = definition.min_limit
        if definition.max_limit is not None:
            characteristics["max_limit"] = definition.max_limit
        if definition.values_list is not None:
            characteristics["values_list"] = ",".join(definition.values_list)
        return {
            "component": ref.component_dict(),
            "variable": ref.variable_dict(),
            "variable_attribute": [attribute],
            "variable_characteristics": characteristics,
        }


def _matches(definition: VariableDef, component_variable: Mapping[str, Any]) -> bool:
    component = component_variable["component"]
    if component["name"] != definition.component:
        return False
    if "instance" in component and component["instance"] != definition.component_instance:
        return False
    evse = component.get("evse")
    if evse is not None:
        if evse["id"] != definition.evse:
            return False
        if "connector_id" in evse and evse["connector_id"] != definition.connector:
            return False
    variable = component_variable.get("variable")
    if variable is None:
        return True
    if variable["name"] != definition.variable:
        return False
    return "instance" not in variable or variable["instance"] == definition.variable_instance


def _restorable(definition: VariableDef) -> bool:
    return definition.persistent and definition.mutability != "ReadOnly"


_STATUS_INFO = {
    "UnknownComponent": ("NotFound", "no such component at this address"),
    "UnknownVariable": ("NotFound", "the component has no such variable"),
    "NotSupportedAttributeType": ("UnsupportedParam", "only the Actual attribute exists"),
}


def _status_info(status: str) -> dict[str, str]:
    reason_code, additional_info = _STATUS_INFO[status]
    return {"reason_code": reason_code, "additional_info": additional_info}


def _normalise(definition: VariableDef, value: str) -> str:
    """The canonical OCPP string for ``value``, or InvalidValue saying why it does not fit."""
    kind = definition.data_type
    if kind == "boolean":
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise InvalidValue(f"{definition.key}: {value!r} is not true/false", "InvalidValue")
        return lowered
    if kind == "integer":
        if not _INTEGER.fullmatch(value):
            raise InvalidValue(f"{definition.key}: {value!r} is not an integer", "InvalidValue")
        _check_range(definition, int(value))
        return str(int(value))
    if kind == "decimal":
        if not _DECIMAL.fullmatch(value):
            raise InvalidValue(f"{definition.key}: {value!r} is not a decimal", "InvalidValue")
        _check_range(definition, float(value))
        return value
    if kind == "string":
        _check_length(definition, value)
        return value
    if kind == "dateTime":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None or "T" not in value:
            raise InvalidValue(
                f"{definition.key}: {value!r} is not an RFC 3339 date-time", "InvalidValue"
            )
        return value
    return _normalise_list(definition, value)


def _normalise_list(definition: VariableDef, value: str) -> str:
    allowed = definition.values_list or ()
    if definition.data_type == "OptionList":
        if value not in allowed:
            raise InvalidValue(
                f"{definition.key}: {value!r} is not one of {','.join(allowed)}", "InvalidValue"
            )
        return value
    members = [member.strip() for member in value.split(",")] if value.strip() else []
    unknown = [member for member in members if member not in allowed]
    if unknown:
        raise InvalidValue(
            f"{definition.key}: {','.join(unknown)} not in {','.join(allowed)}", "InvalidValue"
        )
    if len(set(members)) != len(members):
        raise InvalidValue(f"{definition.key}: a member is listed twice", "InvalidValue")
    normalised = ",".join(members)
    _check_length(definition, normalised)
    return normalised


def _check_range(definition: VariableDef, number: float) -> None:
    low, high = definition.min_limit, definition.max_limit
    if (low is not None and number < low) or (high is not None and number > high):
        raise InvalidValue(
            f"{definition.key}: {number:g} is outside {_bounds(low, high)}", "ValueOutOfRange"
        )


def _check_length(definition: VariableDef, text: str) -> None:
    low, high = definition.min_limit, definition.max_limit
    if (low is not None and len(text) < low) or (high is not None and len(text) > high):
        raise InvalidValue(
            f"{definition.key}: length {len(text)} is outside {_bounds(low, high)}",
            "ValueOutOfRange",
        )


def _bounds(low: float | None, high: float | None) -> str:
    return f"[{'' if low is None else f'{low:g}'}, {'' if high is None else f'{high:g}'}]"


# The standard model


@dataclass
class _Builder:
    """Collects definitions; RW/WriteOnly variables are persistent unless said otherwise."""

    definitions: list[VariableDef] = field(default_factory=list)

    def add(
        self,
        component: str,
        variable: str,
        data_type: DataType,
        mutability: Mutability,
        default: str,
        **extra: Any,
    ) -> None:
        extra.setdefault("persistent", mutability != "ReadOnly")
        self.definitions.append(
            VariableDef(component, variable, data_type, mutability, default, **extra)
        )

    def seconds(self, component: str, variable: str, default: int, **extra: Any) -> None:
        extra.setdefault("min_limit", 0)
        self.add(component, variable, "integer", "ReadWrite", str(default), unit="s", **extra)

    def rw_int(self, component: str, variable: str, default: int, **extra: Any) -> None:
        extra.setdefault("min_limit", 0)
        self.add(component, variable, "integer", "ReadWrite", str(default), **extra)

    def rw_bool(self, component: str, variable: str, default: bool) -> None:
        self.add(component, variable, "boolean", "ReadWrite", "true" if default else "false")

    def constant(
        self, component: str, variable: str, data_type: DataType, value: str, **extra: Any
    ) -> None:
        self.add(component, variable, data_type, "ReadOnly", value, constant=True, **extra)

    def availability(self, component: str, **address: Any) -> None:
        self.constant(component, "Available", "boolean", "true", **address)
        self.add(
            component,
            "AvailabilityState",
            "OptionList",
            "ReadOnly",
            "Available",
            values_list=AVAILABILITY_STATES,
            **address,
        )


TX_POINTS = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")
MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "SoC",
    "Current.Offered",
    "Power.Offered",
)
MESSAGE_TYPES = ("GetReport", "GetVariables", "SetVariables")


def standard_definitions(station: StationShape) -> list[VariableDef]:
    """Every variable of the standard model, in report order."""
    b = _Builder()
    phases = str(station.supply_phases)

    b.availability("ChargingStation")
    b.constant("ChargingStation", "SupplyPhases", "integer", phases)
    b.constant("ChargingStation", "Model", "string", station.model)
    b.constant("ChargingStation", "VendorName", "string", station.vendor_name)

    for evse in station.evses:
        b.availability("EVSE", evse=evse.id)
        b.constant("EVSE", "SupplyPhases", "integer", phases, evse=evse.id)
        b.add("EVSE", "Power", "decimal", "ReadOnly", "0", unit="W", min_limit=0, evse=evse.id)
        for connector in evse.connectors:
            address = {"evse": evse.id, "connector": connector}
            b.availability("Connector", **address)
            b.constant("Connector", "ConnectorType", "string", station.connector_type, **address)
            b.constant("Connector", "SupplyPhases", "integer", phases, **address)

    comm = "OCPPCommCtrlr"
    b.seconds(comm, "HeartbeatInterval", 300, min_limit=1)
    b.seconds(comm, "MessageTimeout", 30, min_limit=1, variable_instance="Default")
    b.rw_int(comm, "MessageAttempts", 3, variable_instance="TransactionEvent")
    b.seconds(comm, "MessageAttemptInterval", 10, variable_instance="TransactionEvent")
    b.seconds(comm, "OfflineThreshold", 60)
    b.rw_int(comm, "ResetRetries", 2)
    b.seconds(comm, "RetryBackOffRandomRange", 10)
    b.rw_int(comm, "RetryBackOffRepeatTimes", 5)
    b.seconds(comm, "RetryBackOffWaitMinimum", 3)
    b.seconds(comm, "WebSocketPingInterval", 30)
    b.constant(
        comm,
        "FileTransferProtocols",
        "MemberList",
        "",
        values_list=("FTP", "FTPS", "HTTP", "HTTPS", "SFTP"),
    )
    b.constant(comm, "NetworkConfigurationPriority", "SequenceList", "0", values_list=("0",))

    security = "SecurityCtrlr"
    b.constant(security, "Identity", "string", station.station_id)
    b.add(
        security,
        "SecurityProfile",
        "integer",
        "ReadOnly",
        str(station.security_profile),
        min_limit=0,
        max_limit=3,
    )
    b.add(
        security,
        "BasicAuthPassword",
        "string",
        "WriteOnly",
        "",
        min_limit=16,
        max_limit=40,
        reboot_required=True,
    )
    b.add(security, "OrganizationName", "string", "ReadWrite", "")

    tx = "TxCtrlr"
    b.add(tx, "TxStartPoint", "MemberList", "ReadWrite", "PowerPathClosed", values_list=TX_POINTS)
    stop_default = "EVConnected,Authorized"
    b.add(tx, "TxStopPoint", "MemberList", "ReadWrite", stop_default, values_list=TX_POINTS)
    b.seconds(tx, "EVConnectionTimeOut", 60)
    b.constant(tx, "StopTxOnEVSideDisconnect", "boolean", "true")
    b.rw_bool(tx, "StopTxOnInvalidId", True)
    b.rw_int(tx, "MaxEnergyOnInvalidId", 0, unit="Wh")
    b.constant(tx, "TxBeforeAcceptedEnabled", "boolean", "false")

    sampled = "SampledDataCtrlr"
    b.rw_bool(sampled, "Enabled", True)
    b.seconds(sampled, "TxUpdatedInterval", 60)
    b.seconds(sampled, "TxEndedInterval", 0)
    for variable, default in (
        ("TxStartedMeasurands", "Energy.Active.Import.Register"),
        (
            "TxUpdatedMeasurands",
            "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage,SoC",
        ),
        ("TxEndedMeasurands", "Energy.Active.Import.Register"),
    ):
        b.add(sampled, variable, "MemberList", "ReadWrite", default, values_list=MEASURANDS)

    auth = "AuthCtrlr"
    b.rw_bool(auth, "Enabled", True)
    b.rw_bool(auth, "AuthorizeRemoteStart", False)
    b.rw_bool(auth, "LocalAuthorizeOffline", True)
    b.rw_bool(auth, "LocalPreAuthorize", False)
    b.rw_bool(auth, "OfflineTxForUnknownIdEnabled", False)

    smart = "SmartChargingCtrlr"
    b.rw_bool(smart, "Enabled", True)
    b.constant(smart, "Available", "boolean", "true")
    # false unless the station config says its hardware can switch phases: only then may a
    # profile name the phase to use (K01.FR.20).
    b.constant(smart, "ACPhaseSwitchingSupported", "boolean", "false")
    b.add(
        smart,
        "Entries",
        "integer",
        "ReadOnly",
        "0",
        min_limit=0,
        variable_instance="ChargingProfiles",
    )
    b.add(
        smart,
        "LimitChangeSignificance",
        "decimal",
        "ReadWrite",
        "10",
        unit="Percent",
        min_limit=0,
        max_limit=100,
    )
    b.rw_bool(smart, "NotifyChargingLimitWithSchedules", False)
    b.constant(smart, "PeriodsPerSchedule", "integer", "24")
    b.constant(smart, "ProfileStackLevel", "integer", "10")
    b.constant(smart, "RateUnit", "MemberList", "A,W", values_list=("A", "W"))
    b.rw_bool(smart, "ExternalControlSignalsEnabled", True)
    b.rw_int(smart, "CompositeScheduleDefaultLimitAmps", 48, unit="A")
    b.rw_int(smart, "CompositeScheduleDefaultLimitWatts", 33120, unit="W")
    b.rw_int(smart, "CompositeScheduleDefaultNumberPhases", 3, min_limit=1, max_limit=3)
    b.rw_int(smart, "SupplyVoltage", 230, unit="V")

    data = "DeviceDataCtrlr"
    for message in MESSAGE_TYPES:
        b.constant(data, "ItemsPerMessage", "integer", "20", variable_instance=message)
    for message in MESSAGE_TYPES:
        b.constant(data, "BytesPerMessage", "integer", "65535", variable_instance=message)

    clock = "ClockCtrlr"
    b.add(clock, "DateTime", "dateTime", "ReadOnly", "")
    b.add(clock, "TimeSource", "SequenceList", "ReadWrite", "Heartbeat", values_list=("Heartbeat",))

    return b.definitions
