"""Exports a MAFormer model to ONNX and checks it in ONNX Runtime.

    python tools/deploy/export_onnx.py CONFIG [CHECKPOINT] --shape H W --out FILE [--dynamic] [--verify]

The code is maformer_mm/tools/export_onnx.py (`--help` lists the options).
"""

from maformer_mm.tools.export_onnx import main

if __name__ == '__main__':
    main()
