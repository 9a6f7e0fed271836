# UperNet MAFormer-T on your own semantic segmentation data in mmseg's custom-dataset layout:
#   data/my_seg/img_dir/{train,val}/NAME.jpg, data/my_seg/ann_dir/{train,val}/NAME.png (one label value per pixel).
# reduce_zero_label=True: 0 in the label PNGs is background (ignored) and class k is value k + 1, as in ADE20K
# (the inherited pipelines load labels the same way); if 0 is your first class, set it False here and in the
# pipelines' LoadAnnotations.
_base_ = ['../upernet_maformer_t_512x512_160k_ade20k.py']

metainfo = dict(classes=('ball', 'box', 'wedge'), palette=[[220, 20, 60], [0, 128, 255], [60, 180, 75]])
dataset = dict(
    type='BaseSegDataset',
    data_root='data/my_seg',
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True,
)

model = dict(decode_head=dict(num_classes=3), auxiliary_head=dict(num_classes=3))
train_dataloader = dict(
    dataset=dict(**dataset, data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'))
)
val_dataloader = dict(dataset=dict(**dataset, data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val')))
test_dataloader = val_dataloader
