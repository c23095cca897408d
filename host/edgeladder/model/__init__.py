"""Model files: the TFLite reader, the board compiler, C arrays, LiteRT, the quantization math."""
