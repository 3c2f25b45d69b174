"""The benchmarks: the video backbone against stock MMAction2
(:mod:`.compare`, ``tools/benchmark.py``) and padded threshold batches
(:mod:`.threshold`), built from :mod:`mmtokred.measure`. Import the
submodules; this package imports none of them."""
