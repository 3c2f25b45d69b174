# VideoMAE's masked-autoencoder pretraining of the proxy model on the
# training clips of tools/make_action_dataset.py (labels unused): 90% tube
# masking, the encoder on the visible tokens, a light decoder (half the
# encoder's width, 2 blocks; ViT-B's is 384 wide, 4 blocks). The encoder is
# the proxy's backbone; videomae_proxy_finetune.py loads it.
# The loss is on the hidden patches' pixels, not normalised per patch
# (VideoMAE's default, norm_pixels=True): on these 8x8 patches of textured
# photographs a hidden patch's normalised content cannot be told from the
# visible tenth, and with it the loss stayed at what predicting zero leaves
# (residual_share 1.0, loss 0.96) for 14 epochs (docs/proxy.md).
_base_ = './videomae_proxy_dense.py'

model = dict(
    _delete_=True,
    type='VideoMAEPretrainer',
    backbone={{_base_.model.backbone}},
    decoder=dict(embed_dims=32, depth=2, num_heads=2),
    mask_ratio=0.9,
    norm_pixels=False,
    data_preprocessor={{_base_.model.data_preprocessor}})

# Pretraining has no labels to evaluate.
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None

max_epochs = 20
train_cfg = dict(max_epochs=max_epochs)
# VideoMAE's: AdamW with betas (0.9, 0.95), weight decay 0.05, warmup then
# cosine; a higher rate than its 1.5e-4 x batch / 256 for a short run.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95),
                   weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, eta_min=1e-5,
         by_epoch=True, begin=2, end=max_epochs, convert_to_iter_based=True)
]
default_hooks = dict(
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None))
