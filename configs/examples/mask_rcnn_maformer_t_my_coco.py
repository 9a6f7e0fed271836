# Mask R-CNN MAFormer-T fine-tuned on your own COCO-format data, the mmdet way: inherit ours, name the classes
# (the JSON's category names, in the order the JSON lists them: mmdet numbers them so) and give every head their
# number. The data root has COCO 2017's layout: annotations/instances_{train,val}2017.json, {train,val}2017/.
# (`tools/train.py configs/mask_rcnn_maformer_t.py --data-root data/my_coco` does the same without a config.)
_base_ = ['../mask_rcnn_maformer_t.py']

data_root = 'data/my_coco/'
metainfo = dict(classes=('ball', 'box', 'wedge'))  # the JSON's category names, in the order it lists them
num_classes = len(metainfo['classes'])

model = dict(roi_head=dict(bbox_head=dict(num_classes=num_classes), mask_head=dict(num_classes=num_classes)))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json', classwise=True)
test_evaluator = val_evaluator
