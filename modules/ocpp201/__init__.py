"""PyOCPP201: an OCPP 2.0.1 charging-station bridge for everkit and EVerest stacks."""
