"""PyInfyPowerDC: EVerest power_supply_DC for Infypower REG/CEG/LRG modules (CAN "V1.13")."""
