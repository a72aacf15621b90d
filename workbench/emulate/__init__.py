"""A toolkit-faithful int8 emulator in onnxruntime: one more backend, and instant what-ifs.

- ``model``: the toolkit's step-1 files -> a runnable ONNX graph with fake quantization;
- ``quantize``: the fake-quantization rules, as data, per toolkit version;
- ``runner``: EmulatorRunner (backend "emulator");
- ``fidelity``: the self-check against the simulator.
"""
