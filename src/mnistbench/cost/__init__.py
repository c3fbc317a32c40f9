"""What runs will cost on this machine, before they start and while they run.

A run's time is its engine's work (`Engine.work`: images trained and evaluated for a ResNet,
the growth of a fit in its training images for an SVM) at rates observed here: by finished
runs of the same speed (the store), else by a short probe run of the engine at that speed,
timed once per machine and cached next to the store (probe.py). rates.py does the arithmetic,
estimate.py each run's seconds, for a study's forecast (study/forecast.py) and its live ETA.

The study gets these estimates as a callback (`study.run.run_study(estimates=...)`), so that
nothing in study/ knows how a run's cost is found.
"""
