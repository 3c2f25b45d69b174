"""The benchmarks, built from :mod:`mmtokred.measure`: one driver
(:mod:`.driver`) for the models of a family side by side, with the video
family against stock MMAction2 (:mod:`.video`, :mod:`.compare`,
``tools/benchmark.py``) and the image family against timm (:mod:`.image`,
``tools/benchmark_timm.py``; top-1: :mod:`.image_accuracy`); inference
engines (:mod:`.engines`) and threshold batches (:mod:`.threshold`). Import
the submodules; this package imports none of them."""
