"""Experiments over token reductions: the FLOPs-accuracy sweep
(:mod:`.sweep`) and the calibration search (:mod:`.calibration`), both
built on the knob-to-reduction recipes and the FLOPs bisection
(:mod:`.recipes`) and on clips decoded once (:mod:`.clips`)."""
