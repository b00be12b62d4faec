"""Run directories: one fitted (classifier, layer, α, seed) cell with its ClaDec and RefAE.

Layout written by :func:`fit_run` (and ``cladec fit``)::

    run/
      run.json        {"format": "cladec-run", "classifier": {...}, "dataset": {...}, "layer", "neurons",
                       "alpha", "epochs", "seed", "metrics": {...}, "timings": {...}, ...}
      cladec/         ClaDec save (cladec.json + weights.safetensors)
      refae/          RefAE save (absent when fitted with refae=False)

``run.json["classifier"]`` is ``{"type": "checkpoint", "path": ...}`` (a directory made by
``cladec train-classifier`` / :func:`cladec.models.save_classifier`; the path is stored relative
to the run directory when possible) or ``{"type": "factory", "factory": "pkg.mod:fn", "weights": ...,
"kwargs": {...}, "input_norm": ...}`` for a user's own model (``{"type": "source", "source": "timm:NAME", ...}`` for
one built by :func:`cladec.models.load_model`). Loading such a run imports that module and
calls the factory again, so a run directory is code you run: load only run directories you trust.

Both entries record ``"weights_sha256"``, the identity of the classifier's weights (the checkpoint's
recorded SHA-256, or that of the ``--weights`` file); :func:`load_run` refuses a run whose classifier has
been replaced since (e.g. a new ``cladec train-classifier --out`` at the same path), because its decoders
would then explain another model. Runs of earlier versions, without it, load unchecked.

What a run folder may point at (checked by :func:`load_run`):

* Its own files -- ``run.json``, ``cladec/`` and ``refae/`` with their ``cladec.json`` and
  ``weights.safetensors`` -- must lie in the run folder: a symbolic link (or a chain of them) that leads out of
  it is refused, naming the link and where it leads (cladec writes every one of them into the folder, so a link
  out was put there by hand). Links that stay inside the folder, and the run folder itself reached through a
  link, are fine. The same holds for the two files of a classifier checkpoint within its folder.
* ``classifier.path`` is a reference to the checkpoint the user named at fit time, stored relative to the run
  folder (usually ``../clf``, ``..`` included) with ``abs_path`` as a fallback, or absolute: it may lead outside
  the run folder (that is where checkpoints live), but it must name a classifier checkpoint, and that
  checkpoint's weights must be the ones ``weights_sha256`` recorded.
* Every field of ``run.json`` is checked against a schema (:data:`cladec._schema.RUN`) before it is used.
"""

from .directory import Run, explain_run, load_run
from .fit import fit_run

__all__ = ["Run", "fit_run", "load_run", "explain_run"]
