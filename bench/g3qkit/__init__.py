"""Helpers of the G3 QUIC gate (``bench/g3_quic.py``).

- :mod:`g3qkit.transports`: raw qh3 DATAGRAM and rendr packet mode over the ``quic``
  carrier in the shape of :mod:`g3ukit.transports`, and the receiver's arrival bins;
- :mod:`g3qkit.stream`: the stream part (bulk SHA-256 over QUIC + TCP paths, raw qh3
  stream baseline).

The max-rate and paced loops are :mod:`g3ukit.runs`'.
"""
