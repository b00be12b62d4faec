"""The paper's claim statistics in conftest.eval_setup's configuration, for one seed and thread count.

vgg-paper trained 2 epochs on 5,000 Fashion-MNIST images, ClaDec (alpha 0.001) and RefAE at ``layer`` 2 epochs
each, a ClaDec at alpha 0.9 on the same layer, 1,000 test images; prints one JSON line (RefAE/ClaDec MSE ratio,
SSIM, accuracy and agreement differences, alpha 0.9 - 0.001 accuracy difference, collapse flags). bf16 autocast
is off, as in the suite. ``tests/STABILITY.md`` lists the runs behind the claim tests' thresholds:

    python tests/stability/claims.py SEED THREADS [LR] [EPOCHS] [LAYER] >> claims.jsonl
"""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # after the path of the tests' helpers

import cladec.evaluation.metrics as M
import cladec.training.engine
from cladec import ClaDec
from cladec.evaluation.evaluate import evaluate_run
from cladec.models.predict import predict
from helpers.core import DATA_ROOT as root
from helpers.core import claims_setup


def main(argv: list[str]) -> None:
    seed, threads = int(argv[0]), int(argv[1])
    lr = float(argv[2]) if len(argv) > 2 else 3e-4
    epochs = int(argv[3]) if len(argv) > 3 else 2
    layer = argv[4] if len(argv) > 4 else "conv4"
    torch.set_num_threads(threads)
    cladec.training.engine.cpu_has_bf16 = lambda: False  # as tests/conftest.py does
    t = time.time()
    base = Path(tempfile.mkdtemp())
    _, run, train, test = claims_setup(base, root, seed=seed, layer=layer, epochs=epochs, lr=lr)
    high = ClaDec(run.classifier, layer, alpha=0.9).fit(train, epochs=epochs, seed=seed, verbose=False, lr=lr)
    s = evaluate_run(base / "run", limit=1000, data_root=str(root), eval_classifier=False, write=False, verbose=False)[
        "summary"
    ]
    x, y = test.tensors()
    acc_high = M.accuracy(predict(run.classifier, high.reconstruct(x)), y)
    print(
        json.dumps(
            dict(
                layer=layer,
                seed=seed,
                threads=threads,
                lr=lr,
                epochs=epochs,
                collapsed=[run.cladec.collapsed, run.refae.collapsed, high.collapsed],
                mse_ratio=s["mse_refae"] / s["mse_cladec"],
                mse_cladec=s["mse_cladec"],
                mse_refae=s["mse_refae"],
                ssim_diff=s["ssim_refae"] - s["ssim_cladec"],
                acc_diff=s["accuracy_cladec"] - s["accuracy_refae"],
                agree_diff=s["agreement_cladec"] - s["agreement_refae"],
                alpha_diff=acc_high - s["accuracy_cladec"],
                acc_orig=s["accuracy_original"],
                seconds=time.time() - t,
            )
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
