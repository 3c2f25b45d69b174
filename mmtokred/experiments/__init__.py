"""Experiments over token reductions: the FLOPs-accuracy sweep
(:mod:`.sweep`: points priced by :mod:`.costs`, run by :mod:`.evaluation`,
written and printed by :mod:`.sweep_table`, drawn by :mod:`.pareto_plot`)
and the calibration search (:mod:`.calibration` over the shapes of
:mod:`.search_space`, written by :mod:`.calibrated_config`), both built on
the knob-to-reduction recipes and the FLOPs bisection (:mod:`.recipes`)
and on clips decoded once (:mod:`.clips`)."""
