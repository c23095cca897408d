"""Talking to one board, real or virtual: port checks, flashing, deploying, mpy-cross, the VM.

A virtual board is just another port here: nothing in this package knows the simulator.
"""
