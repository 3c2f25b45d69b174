# A short fine-tune of the trained proxy model with PPT on, at 0.35 of the
# dense FLOPs without proportional attention (each of blocks 1-6 pools or
# prunes as tools/sweep.py bisects it for 0.35: 256 -> 9 tokens; 0.36 with
# the log-size bias counted), as videomae_proxy_tome_finetune.py does
# for ToMe (3 epochs, a tenth of the first training's rate). PPT's authors
# fine-tune with it on (30 epochs at lr 1e-5 on ImageNet). Proportional
# attention on, from videomae_proxy_tome_finetune.py.
_base_ = './videomae_proxy_tome_finetune.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                _delete_=True,
                type='PPT',
                blocks=(1, 2, 3, 4, 5, 6),
                r=(111, 63, 35, 20, 12, 6)))))
