"""A user's own ``torchrun`` script (tests/training/test_distributed.py): it initialises ``torch.distributed``
itself and then uses cladec's Python API as in one process.

    torchrun --standalone --nproc_per_node=2 ddp_script.py fit CLASSIFIER_DIR DATA_ROOT OUT SEED
    torchrun --standalone --nproc_per_node=2 ddp_script.py fail CLASSIFIER_DIR DATA_ROOT OUT SEED

``resume`` fits a run directory with epoch checkpoints (the test interrupts it); ``fit`` fits a ClaDec on 512
Fashion-MNIST images and saves it to OUT (only rank 0 writes), after a global batch that does not split over the
ranks was refused; ``fail`` fits a run directory whose data set rank 1 cannot find (a node without the data), so
rank 1 raises while rank 0 trains.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def main() -> None:
    mode, clf_dir, data_root, out, seed = sys.argv[1:6]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    import cladec
    from cladec.data import load_dataset
    from cladec.models import load_classifier
    from cladec.runs import fit_run

    rank = dist.get_rank()
    if mode == "fit":
        model, _ = load_classifier(clf_dir)
        data = load_dataset("fashion-mnist", root=data_root, split="train", limit=512)
        e = cladec.ClaDec(model, "conv3", alpha=0.0)
        try:
            e.fit(data, epochs=1, batch_size=31, verbose=False)
        except cladec.ConfigError as err:
            print(f"refused: {err}", flush=True)
        # a held-out quarter: every rank records the same val_mse (and would take the same decision to stop)
        e.fit(data, epochs=1, batch_size=32, lr=1e-3, seed=int(seed), verbose=False, validation=0.25)
        e.save(out)  # rank 0 writes; every rank returns once the folder is complete
        assert os.path.isfile(os.path.join(out, "cladec.json")), "the save is complete on every rank"
        # one write per line: two ranks share the pipe, and print() writes the text and its newline apart
        sys.stdout.write(f"rank {rank}: losses {[(round(h['loss'], 8), round(h['val_mse'], 8)) for h in e.history]}\n")
        sys.stdout.flush()
    else:  # a run directory: the fixture's `cladec fit` of run1 with epoch checkpoints (the test interrupts it),
        # or one whose data set rank 1 cannot find (a node without the data), fitting long enough to be stopped
        kw = dict(classifier_dir=clf_dir, dataset="fashion-mnist", layer="conv3", seed=int(seed), verbose=False)
        if mode == "resume":
            fit_run(
                out,
                data_root=data_root,
                epochs=2,
                limit=1024,
                test_limit=500,
                batch_size=64,
                lr=1e-3,
                resume=True,
                **kw,
            )
        elif mode == "fail":
            root = data_root if rank == 0 else os.path.join(data_root, "not-on-this-node")
            fit_run(out, data_root=root, epochs=50, limit=512, test_limit=100, batch_size=32, **kw)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
