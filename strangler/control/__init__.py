"""The control plane: ramps, roll back all, and the state they keep; never imported by the data path.

It steers traffic only through the shares it publishes (strangler.overlay),
which the runtime applies as a reload would.
"""
