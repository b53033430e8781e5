"""Simulated appliances publishing over MQTT, with injected faults as ground truth.

- `appliances`: per-kind physics (usage, fouling, wear, readings, fault signatures)
- `device`: a simulated appliance's identity, and the hidden state of a fleet of them, advanced in time
- `offline`: offline spells, with readings buffered and events held back until the device is back
- `faults`: the `--faults` spec, the faults open on the devices, and the ground truth file
- `failures`: gradual failures (a clogging filter, scale, a worn element) as ground truth: when each crosses the
  level its owner notices
- `wire`: the MQTT topics, payloads and timestamps of CONTRACT.md
- `simulation`: one step of the fleet, composed of the above, and the messages it produces
- `state`: the fleet's state saved between runs
- `run`: the simulation loop, live over MQTT or as fast history
- `delivery`: QoS 1 publishing that keeps each message until the broker acknowledges it with success, and
  sends again what a PUBACK "no matching subscribers" (0x10) says nobody got
- `fleet`: a deterministic demo fleet and its owners
- `clock`: units of simulated time, UTC, chances per day
"""
