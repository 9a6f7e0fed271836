"""`make demo`: Mask R-CNN MAFormer-T trained, evaluated and drawn on a generated COCO-format set, on CPU.

    python tools/demo.py [--work-dir DIR] [--data-root DIR] [--device cpu]
                         [--num-train 64] [--num-val 16] [--image-size 160] [--epochs 12]

The code is maformer_mm/tools/demo.py.
"""

from maformer_mm.tools.demo import main

if __name__ == '__main__':
    main()
