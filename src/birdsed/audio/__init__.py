"""Decoding recordings: any file soundfile reads -> mono float32 at 32 kHz, whole or streamed."""
