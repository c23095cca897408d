# Runs after boot.py. For now it only proves the device package loads; the inference loop
# comes later.
import gc

import ladder

gc.collect()
print("edgeladder ladder %s, %d bytes free" % (ladder.__version__, gc.mem_free()))
