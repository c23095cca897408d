# Runs first at every reset, before main.py. Keep it tiny: a crash here needs a reflash.
import gc

# Collect once a quarter of the free heap has been allocated since the last collection, instead of
# waiting for an allocation to fail: shorter pauses, less fragmentation of the ~110 KB heap.
gc.collect()
gc.threshold(gc.mem_free() // 4 + gc.mem_alloc())
