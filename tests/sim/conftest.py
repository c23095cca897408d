"""System tests on virtual boards: the real MicroPython unix port, the real mpremote.

The fixtures (sim_board, ...) come from the edgeladder_sim.plugin pytest plugin, which
the package registers through its pytest11 entry point.
"""
