"""Models behind one interface: the deterministic stand-in and the ONNX Runtime decoder."""
