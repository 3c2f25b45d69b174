# configs/videomae_ppt.py fine-tuned on Kinetics-400 with PPT on, from the
# official checkpoint: PPT's recipe (30 epochs at lr 1e-5, AdamW, cosine;
# k400_schedule.py). Train with
#   bash tools/dist_train.sh configs/finetune/videomae_ppt.py 8
_base_ = ['../videomae_ppt.py', './k400_schedule.py']
