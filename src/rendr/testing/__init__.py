"""Test kit shipped with rendr: a simulated network for the engine, a TCP fault
relay and a network-namespace harness (the last two need asyncio / root)."""
