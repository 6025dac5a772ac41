"""The control plane: ramps, roll back all, and the state they keep; never imported by the data path.

It steers traffic only through the shares it publishes (strangler.overlay),
which the runtime applies as a reload would: beside the proxy, or from a
process of its own (`strangler control`) whose shares every instance follows.
"""
