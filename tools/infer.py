"""Predictions on an image or a folder of images, drawn and saved, through OpenMMLab's inferencers
(mmdet's DetInferencer, mmseg's MMSegInferencer, mmpretrain's ImageClassificationInferencer).

    python tools/infer.py IMAGE_OR_DIR CONFIG CHECKPOINT [--out-dir outputs] [--batch-size 4]
                          [--pred-score-thr 0.3] [--device cuda:0] [--no-save-pred]

Drawn images go to OUT_DIR/vis/, predictions to OUT_DIR/preds/*.json (detection, in mmdet's format;
classification) or OUT_DIR/pred/*.png (segmentation label maps). The code is maformer_mm/tools/infer.py.
"""

from maformer_mm.tools.infer import main

if __name__ == '__main__':
    main()
