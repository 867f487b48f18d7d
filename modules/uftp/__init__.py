"""A UFTP (LF Energy Shapeshifter) aggregator adapter: sells the flexible power of everkit
stations to a DSO and turns its FlexOrders into per-station power caps (external limits,
source ``SO``). Runs as its own process (``everkit uftp``); needs the ``uftp`` extra.

Layers, from the wire inwards: ``service`` (the shapeshifter-uftp library: HTTP, signatures)
converts messages to the small models of ``messages``; ``guard`` refuses what the spec forbids
and the library lets through; ``market`` decides offers and orders (sans-IO, takes ``now``);
``schedule`` turns orders into ExternalLimits; ``station_link`` delivers them over MQTT.
"""
