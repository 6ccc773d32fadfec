"""Train the CIFAR-10 recipe: ``python examples/cifar10/train.py --config configs/default_cifar.yaml --out runs/cifar``.

Multi-GPU: ``torchrun --nproc_per_node 8 examples/cifar10/train.py --config ... --out ...``. All options:
``--help``; the engine is :mod:`ctcm.engine`.
"""

from ctcm.engine.cli import main_train

if __name__ == "__main__":
    raise SystemExit(main_train())
