"""The soak run (`make soak`): long mixed load with faults and reloads; see soak/run.py."""
