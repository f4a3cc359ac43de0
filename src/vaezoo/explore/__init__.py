"""``vaezoo explore``: a local web page to move a model's latents and watch its decoder answer, for one
model or several side by side. The computations (:mod:`vaezoo.explore.session`) need no web framework;
the server (:mod:`vaezoo.explore.server`) needs the optional extra ``vaezoo[explore]``."""
