# The proxy model fine-tuned from its masked-autoencoder pretraining
# (videomae_proxy_pretrain.py): the encoder loaded from the pretraining
# checkpoint (keys backbone.*; its final LayerNorm is left out and fc_norm
# is new, as VideoMAE's fine-tuning does), the head from scratch. Set the
# checkpoint of another seed with
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = './videomae_proxy_dense.py'

pretrained = 'work_dirs/proxy_pretrain_seed0/epoch_20.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
# The encoder's final norm is left out and fc_norm starts as initialised.
partial_load = ['backbone.norm', 'backbone.fc_norm']

# Half the epochs of training from scratch: a pretrained encoder starts
# where a scratch one is after its first epochs at chance.
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, eta_min=1e-5,
         by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True)
]
default_hooks = dict(checkpoint=dict(interval=2))
