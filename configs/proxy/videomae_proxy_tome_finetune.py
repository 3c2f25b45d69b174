# A short fine-tune of the trained proxy model (videomae_proxy_finetune.py's
# last epoch) with ToMe on, at 0.35 of the dense FLOPs without proportional
# attention (r per block as tools/sweep.py bisects it for 0.35: 256 -> 20
# tokens over 8 blocks; 0.38 with the log-size bias counted),
# through MMAction2's train loop: 3 epochs of the training split at a tenth
# of the first training's rate. ToMe's authors train with merging on; the
# gradient flows through the size-weighted merges. Proportional attention
# on, as the pretrained proxy decides (docs/proxy.md).
#   --cfg-options load_from=work_dirs/proxy_finetune_seed1/epoch_8.pth
_base_ = './videomae_proxy_finetune.py'

model = dict(
    backbone=dict(
        init_cfg=None,  # every weight comes from load_from
        token_reduction=dict(
            blocks=dict(type='ToMe', r=(48, 48, 48, 48, 32, 16, 8, 4)),
            proportional_attention=True)))
load_from = 'work_dirs/proxy_finetune_seed0/epoch_8.pth'
partial_load = None  # the fine-tuned checkpoint fills every tensor

max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=4e-5))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-6,
         by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True)
]
default_hooks = dict(checkpoint=dict(interval=1))
