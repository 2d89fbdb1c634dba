"""The plain MONAI recipe: the reference baseline the U-Net `cpu` preset is measured against.

A deliberately ordinary BraTS script that uses nothing of contraseg: FLAIR, T1c, T1, T2 z-scored
inside the union of their non-zero voxels, resampled to 120 x 120 x 78 (about 2 mm; trilinear,
labels nearest); MONAI's UNet (16-32-64-128-256, strides 2, two residual units); DiceCELoss
(softmax, one-hot targets, 4 classes); Adam, lr 1e-3 constant; batches of two 64^3 patches,
each centred on a random tumour voxel with probability 1/2, else uniform; random flips on each
axis; float32. Inference: sliding window 64^3 with overlap 0.5, logits upsampled trilinearly to
the 1 mm grid, argmax, no post-processing.

Training stops after MINUTES of training time (preprocessing and inference excluded). A
checkpoint is written every 100 steps; --resume continues from it (the random streams restart
from (seed, step), so a resumed run is not bitwise the uninterrupted one).

Usage: python scripts/plain_monai_unet.py --data BRATS_FOLDER --split SPLIT.json --out OUT
           [--minutes 25] [--seed 0] [--threads 1] [--cache DIR] [--resume]
SPLIT.json: {"train": [case folder names], "test": [case folder names]}. Predictions go to
OUT/pred/<case>.nii.gz (BraTS labels 0, 1, 2, 4); OUT/run.json records steps and time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

MODALITIES = ("flair", "t1ce", "t1", "t2")
GRID = (120, 120, 78)
PATCH = 64


def load_case(root: Path, case: str, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(4, *GRID) z-scored image and (*GRID) label (0-3) of one case, cached as .npz."""
    cached = cache / f"{case}.npz" if cache else None
    if cached and cached.is_file():
        with np.load(cached) as saved:
            return saved["image"], saved["label"]
    image = np.stack([nib.load(root / case / f"{case}_{m}.nii.gz").get_fdata(dtype=np.float32)
                      for m in MODALITIES])
    mask = (image != 0).any(0)
    for channel in image:
        values = channel[mask]
        channel[mask] = (values - values.mean()) / max(float(values.std()), 1e-8)
        channel[~mask] = 0
    label = np.asarray(nib.load(root / case / f"{case}_seg.nii.gz").dataobj).astype(np.int64)
    label[label == 4] = 3
    image = F.interpolate(torch.from_numpy(image)[None], GRID, mode="trilinear")[0].numpy()
    label = F.interpolate(torch.from_numpy(label)[None, None].float(), GRID,
                          mode="nearest")[0, 0].numpy().astype(np.uint8)
    if cached:
        cache.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".tmp.npz")
        np.savez(partial, image=image, label=label)
        partial.replace(cached)
    return image, label


def random_patch(image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """A 64^3 patch: centred on a tumour voxel with probability 1/2, else uniform; flipped."""
    tumour = np.argwhere(label > 0)
    if rng.random() < 0.5 and len(tumour):
        centre = tumour[rng.integers(len(tumour))]
        start = [int(np.clip(c - PATCH // 2, 0, n - PATCH))
                 for c, n in zip(centre, GRID, strict=True)]
    else:
        start = [int(rng.integers(0, n - PATCH + 1)) for n in GRID]
    box = tuple(slice(s, s + PATCH) for s in start)
    x, y = image[(slice(None), *box)], label[box]
    for axis in range(3):
        if rng.random() < 0.5:
            x, y = np.flip(x, axis + 1), np.flip(y, axis)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def network() -> UNet:
    return UNet(spatial_dims=3, in_channels=4, out_channels=4, channels=(16, 32, 64, 128, 256),
                strides=(2, 2, 2, 2), num_res_units=2)


def train(args, cases: list[str], out: Path) -> UNet:
    data = [load_case(args.data, c, args.cache) for c in cases]
    net, loss_fn = network(), DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    step, seconds = 0, 0.0
    checkpoint = out / "checkpoint.pt"
    if args.resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        step, seconds = state["step"], state["seconds"]
    torch.manual_seed(args.seed * 1_000_003 + step)
    rng = np.random.default_rng([args.seed, step])
    net.train()
    while seconds < args.minutes * 60:
        started = time.perf_counter()
        batch = [random_patch(*data[rng.integers(len(data))], rng) for _ in range(2)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None].long()
        loss = loss_fn(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 100 == 0:  # the checkpoint's time counts, as contraseg's budget counts it
            print(f"step {step} loss {loss.item():.4f} {seconds / 60:.1f} min", flush=True)
            save(checkpoint, {"net": net.state_dict(), "optimiser": optimiser.state_dict(),
                              "step": step, "seconds": seconds + time.perf_counter() - started})
        seconds += time.perf_counter() - started
    save(checkpoint, {"net": net.state_dict(), "optimiser": optimiser.state_dict(),
                      "step": step, "seconds": seconds})
    write_json(out / "run.json", {"steps": step, "train_seconds": seconds, "seed": args.seed,
                                  "threads": args.threads, "train": cases})
    return net


@torch.no_grad()
def predict(args, net: UNet, cases: list[str], out: Path) -> None:
    net.eval()
    (out / "pred").mkdir(parents=True, exist_ok=True)
    for case in cases:
        image, _ = load_case(args.data, case, args.cache)
        reference = nib.load(args.data / case / f"{case}_flair.nii.gz")
        logits = sliding_window_inference(torch.from_numpy(image)[None], (PATCH,) * 3, 2, net,
                                          overlap=0.5)
        logits = F.interpolate(logits, reference.shape, mode="trilinear")
        label = logits[0].argmax(0).numpy().astype(np.uint8)
        label[label == 3] = 4
        target = out / "pred" / f"{case}.nii.gz"
        partial = target.with_name(f".{case}.tmp.nii.gz")
        nib.save(nib.Nifti1Image(label, reference.affine, reference.header), partial)
        partial.replace(target)


def save(path: Path, state: dict) -> None:
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)


def write_json(path: Path, data: dict) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = json.loads(args.split.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    done = args.out / "run.json"
    if args.resume and done.is_file():  # trained: only the predictions may be missing
        net = network()
        net.load_state_dict(torch.load(args.out / "checkpoint.pt", weights_only=False)["net"])
    else:
        net = train(args, split["train"], args.out)
    predict(args, net, split["test"], args.out)


if __name__ == "__main__":
    main()
