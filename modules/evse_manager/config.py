"""Charger settings; names follow EVerest's EvseManager config where the meaning is the same."""

from __future__ import annotations

from dataclasses import dataclass

#: IEC 61851-23:2023 CC.4.1.2 / EvseManager: below this the DC output counts as safe.
SAFE_VOLTAGE_V = 60.0
#: Cable check: the current limit while the test voltage is applied (CC.7.6.20 short test).
CABLE_CHECK_CURRENT_A = 2.0
#: Below this insulation resistance the cable check fails (and charging stops).
INSULATION_FAULT_OHM = 100_000.0


@dataclass(frozen=True)
class ChargerConfig:
    connector_id: int = 1
    evse_id: str = "DE*PNX*E12345*1"
    dc_isolation_voltage_V: float = 0.0  # 0: from the EV's maximum voltage (CC.4.1.2)
    cable_check_enable_imd_self_test: bool = True
    cable_check_wait_number_of_imd_measurements: int = 1
    cable_check_wait_below_60V_before_finish: bool = True
    cable_check_relays_closed_timeout_s: float = 5.0
    cable_check_voltage_timeout_s: float = 10.0
    cable_check_self_test_timeout_s: float = 30.0
    cable_check_measurement_timeout_s: float = 5.0
    dc_ramp_ampere_per_second: float = 25.0
    hlc_charge_loop_without_energy_timeout_s: float = 5.0
    internal_over_voltage_duration_ms: float = 400.0
    voltage_plausibility_max_spread_threshold_V: float = 50.0
    voltage_plausibility_fault_duration_ms: float = 30000.0
    sleep_before_enabling_pwm_hlc_mode_ms: float = 500.0
    stopping_charging_timeout_s: float = 20.0
    limits_reapply_interval_s: float = 5.0
    energy_request_interval_s: float = 1.0
    #: Power allowed before any energy manager sent limits; 0: wait for one (our key).
    standalone_power_W: float = 0.0
    has_imd: bool = True
