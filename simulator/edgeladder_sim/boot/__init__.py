"""MicroPython that runs on a virtual board's VM before the firmware: the board's own start-up.

These files are board-side code (the MicroPython subset), compiled by mpy-cross in the firmware
tests like ``firmware/``. They stand in for what an ESP32's C start-up code and frozen modules do:
``bootstrap.py`` mounts the flash and runs ``boot.py``/``main.py``, ``flashbdev.py`` is the flash
partition's block device, ``inisetup.py`` formats a blank one, ``machine.py`` adds the
``machine.reset()`` the unix port lacks. The host reaches them only as files on the VM's path.
"""
