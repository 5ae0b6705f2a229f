"""Quality-control figures, one module per domain; every function saves a PNG and returns its path.

* `neurotorch.plotting.fmri`: noise-ceiling histograms, ROIs over the T1w, split projections;
* `neurotorch.plotting.meeg`: leadfield column norms, sensor topomaps (MNE), coverage curves;
* `neurotorch.plotting.connectome`: lesion network maps on orthogonal slices.

Figures are drawn on matplotlib's Agg canvas without pyplot, so calling them never changes the
backend of a notebook or script. Import the domain module you need (MNE loads only with ``meeg``).
"""
