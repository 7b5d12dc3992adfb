"""core/delivery.py: a path's delivery rate and BOND's in-flight allowance."""

from __future__ import annotations

import pytest

from rendr.core.delivery import MIN_ALLOWANCE, START_ALLOWANCE, DeliveryRate


def test_a_path_emptied_by_every_ack_still_gets_a_rate() -> None:
    # Found on loopback: every ACK emptied the path, the next send restarted the
    # sample interval, no sample was ever taken, and the allowance stayed at its
    # start value (bond at 80 MB/s where prime did 1.5 GB/s).
    rate = DeliveryRate(0.0)
    now = 0.0
    for _ in range(200):
        rate.idle(now)  # data goes out with nothing in flight
        now += 0.001
        rate.on_delivered(100_000, now, 0.0002)  # 100 kB per ms: 100 MB/s
    assert rate.rate == pytest.approx(100e6, rel=0.05)
    assert rate.allowance(0.0002, 0.005) > START_ALLOWANCE


def test_an_idle_spell_does_not_count_against_the_rate() -> None:
    rate = DeliveryRate(0.0)
    for i in range(1, 101):
        rate.on_delivered(10_000, i * 0.001, 0.001)  # 10 MB/s for 0.1 s
    before = rate.rate
    rate.idle(5.0)  # nothing to send for 5 s
    rate.on_delivered(10_000, 5.06, 0.001)
    assert rate.rate >= before * 0.9


def test_allowance_bounds() -> None:
    rate = DeliveryRate(0.0)
    assert rate.allowance(None, 0.005) == START_ALLOWANCE
    for i in range(1, 200):
        rate.on_delivered(10, i * 0.01, 0.001)  # a trickle
    assert rate.allowance(0.001, 0.005) == MIN_ALLOWANCE
