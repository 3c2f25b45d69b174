# What mmtokred adds to an official MMAction2 VideoMAE config beside its
# model and data: the plugin and its hooks. Inherited next to the official
# config, _base_ = ['mmaction::...', THIS]: mmengine refuses a key that two
# bases set, so the backbone type and the checked test set, which change
# the official model and test_dataloader, are set in each config.
custom_imports = dict(imports=['mmtokred.plugin'], allow_failed_imports=False)
# DataCheckHook: the dataset's classes must match the head's; reports the
# videos skipped and the clips looped (docs/data.md). AttentionKernelHook:
# on a GPU, times the attention kernels the model can run before the loops
# and runs the fastest (docs/packed.md).
custom_hooks = [dict(type='DataCheckHook'), dict(type='AttentionKernelHook')]
