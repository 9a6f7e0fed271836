"""Generates small synthetic data sets in the layouts the real ones use, for the demos and tests.

    python tools/make_demo_data.py coco --out data/demo_coco   # COCO instance segmentation
    python tools/make_demo_data.py coco2017 --out data/my_coco --classes ball box wedge pentagon
    python tools/make_demo_data.py ade --out data/demo_ade     # ADE20K semantic segmentation

The code is maformer_mm/tools/demo_data.py.
"""

from maformer_mm.tools.make_demo_data import main

if __name__ == '__main__':
    main()
