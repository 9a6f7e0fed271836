"""`make demo-seg`: UperNet MAFormer-T trained, evaluated and drawn on a generated ADE20K-layout set, on CPU.

    python tools/demo_seg.py [--work-dir DIR] [--data-root DIR] [--device cpu]
                             [--num-train 400] [--num-val 16] [--image-size 80] [--iters 300]

The code is maformer_mm/tools/demo_seg.py.
"""

from maformer_mm.tools.demo_seg import main

if __name__ == '__main__':
    main()
