"""databite-stream: keeps third-party data in sync, as a faust-streaming/Kafka stream processor.

Layering (see DESIGN.md): ``schedule``, ``ratelimit``, ``retry`` and ``models`` are the pure core
and import neither faust nor aiokafka; ``execution`` and ``connectors`` run syncs and actions
without Kafka; ``stream`` wires everything into faust agents.
"""

__version__ = "0.1.0"
__all__ = ("__version__",)
