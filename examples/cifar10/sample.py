"""Write N images from a checkpoint: ``python examples/cifar10/sample.py --ckpt runs/cifar/checkpoints/latest.pt
--num-samples 50000 --out samples/`` (the same as ``ctcm sample ...``; ``--help`` for the options)."""

from ctcm.sampling_cli import main_sample

if __name__ == "__main__":
    raise SystemExit(main_sample())
