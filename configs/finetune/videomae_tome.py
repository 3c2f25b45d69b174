# configs/videomae_tome.py (proportional attention on, as ToMe trains)
# fine-tuned on Kinetics-400 with merging on, from the official checkpoint
# (k400_schedule.py: 30 epochs at lr 1e-5). ToMe's video results train with
# merging on through the whole fine-tune from the MAE-pretrained weights
# (VideoMAE's schedule); MMAction2 ships only the fine-tuned ones, from
# which this short schedule starts.
#   bash tools/dist_train.sh configs/finetune/videomae_tome.py 8
_base_ = ['../videomae_tome.py', './k400_schedule.py']
