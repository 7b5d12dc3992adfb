"""Helpers of the G3u packet-mode gate (``bench/g3u_packet.py``).

- :mod:`g3ukit.transports`: the datagram transports under test, one shape for all
  (raw ``DatagramProtocol``, raw ``add_reader`` + ``recvfrom_into`` loop, rendr packet
  mode);
- :mod:`g3ukit.runs`: the receiver and sender coroutines of one run (max rate or paced),
  which return plain dicts of measurements (nothing here prints).
"""
