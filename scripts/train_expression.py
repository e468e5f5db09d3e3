"""Train facelens's own expression model on FER-2013 and export it to ONNX.

The network starts from a face network rather than from nothing, because two CPU cores cannot afford the
hundreds of epochs a from-scratch FER-2013 model needs: the convolutional trunk of ArcFace MobileFaceNet
(`arcface-mbf`, the w600k_mbf weights; read straight from its ONNX file, batch norm already folded into the
convolutions) is fine-tuned at 64x64 with a new head. Its input is what FER-2013 is: a 48x48 grey face crop,
pixels 0..255; scaling to 64x64 and [-1, 1] happen inside the exported graph, so the ONNX file is fed a FER-style
crop directly.

Training: FER-2013 `Training` (28,709 crops), batches of 64, AdamW with a cosine schedule, label smoothing 0.1,
class weights (n / (7 n_c)) ** 0.5 (disgust, 1.5 % of the data, weighs ~3x), and augmentation on the fly:
horizontal flips, affine jitter (rotation +-12 deg, scale 0.85-1.15, shift +-10 %), brightness/contrast, and
random erasing. Validation: `PublicTest` (3,589 crops) after each epoch, with and without flip averaging; it
never steers training (no early stopping, no picking the best epoch): the last epoch is exported.

Licence of the result: derived from InsightFace's w600k_mbf (non-commercial research use) and trained on
FER-2013 (research use): research use only.

Usage (needs `pip install torch==2.13.0` in the venv; ~7 min per epoch on 2 cores, 10 epochs ~80 min; see RESULTS.md):

    .venv/bin/python scripts/train_expression.py --epochs 10 --out .cache/train-expression
    .venv/bin/python scripts/train_expression.py --resume --restart 0.5 --epochs 18   # a second, warm-restart cycle
    .venv/bin/python scripts/train_expression.py --resume --restart 0.4 --epochs 25   # the third
    .venv/bin/python scripts/train_expression.py --resume --restart 0.3 --epochs 31   # the fourth (what ships)
    .venv/bin/python scripts/train_expression.py --export .cache/train-expression/snapshot-e31.pt \\
        --onnx src/facelens/models/weights/expression-facelens.onnx      # several checkpoints: a snapshot ensemble
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACELENS_SHARED") or REPO.parent / "shared")
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # facelens's EXPRESSIONS order
TRUNK_OUTPUT = "513"  # w600k_mbf: output of the last conv + PReLU, before Flatten -> Gemm (the embedding layer)
SIZE = 64


def load_split(root: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels = [], []
    for c, name in enumerate(CLASSES):
        folder = root / name
        if not folder.is_dir():
            sys.exit(f"{folder}: missing (FER-2013 folder-per-class layout expected; see ../shared/DATA.md)")
        for path in sorted(folder.iterdir()):
            with Image.open(path) as im:
                grey = np.asarray(im.convert("L").resize((48, 48), Image.Resampling.BILINEAR), np.uint8)
            images.append(grey)
            labels.append(c)
    return np.stack(images), np.asarray(labels, np.int64)


def build_model(seed: int):
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper
    from torch import nn

    from facelens.models.store import model_path

    class OnnxTrunk(nn.Module):
        """The ONNX graph's nodes up to `stop`, run with torch ops and trainable initializers."""

        def __init__(self, graph: onnx.GraphProto, stop: str) -> None:
            super().__init__()
            self.params = nn.ParameterDict()
            self.keys: dict[str, str] = {}
            for i, init in enumerate(graph.initializer):
                self.params[f"p{i}"] = nn.Parameter(torch.from_numpy(numpy_helper.to_array(init).copy()))
                self.keys[init.name] = f"p{i}"
            self.nodes = []
            for node in graph.node:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                self.nodes.append((node.op_type, list(node.input), node.output[0], attrs))
                if stop in node.output:
                    break
            else:
                raise ValueError(f"{stop} is not an output of the graph")
            self.input_name, self.stop = graph.input[0].name, stop
            # grey input: the first conv's three colour filters summed give the same response to a grey image
            first = self.nodes[0]
            w = self.params[self.keys[first[1][1]]]
            self.params[self.keys[first[1][1]]] = nn.Parameter(w.data.sum(1, keepdim=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            env = {self.input_name: x}

            def get(name: str) -> torch.Tensor:
                return env[name] if name in env else self.params[self.keys[name]]

            for op, ins, out, at in self.nodes:
                if op == "Conv":
                    pads = at.get("pads", [0, 0, 0, 0])
                    y = F.conv2d(get(ins[0]), get(ins[1]), get(ins[2]) if len(ins) > 2 else None,
                                 at.get("strides", [1, 1]), (pads[0], pads[1]), at.get("dilations", [1, 1]),
                                 at.get("group", 1))
                elif op == "PRelu":
                    y = F.prelu(get(ins[0]), get(ins[1]).reshape(-1))
                elif op == "Add":
                    y = get(ins[0]) + get(ins[1])
                else:
                    raise ValueError(f"op {op} not handled")
                env[out] = y
            return env[self.stop]

    class ExpressionNet(nn.Module):
        """(N, 1, 48, 48) grey 0..255 -> (N, 7) logits."""

        def __init__(self) -> None:
            super().__init__()
            graph = onnx.load(str(model_path("arcface-mbf"))).graph
            self.trunk = OnnxTrunk(graph, TRUNK_OUTPUT)
            with torch.no_grad():
                channels = self.trunk(torch.zeros(1, 1, SIZE, SIZE)).shape[1]
            torch.manual_seed(seed)
            self.head = nn.Sequential(
                nn.Flatten(), nn.Dropout(0.3), nn.Linear(channels * (SIZE // 16) ** 2, 256), nn.BatchNorm1d(256),
                nn.PReLU(256), nn.Dropout(0.3), nn.Linear(256, len(CLASSES)),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            return self.head(self.trunk((x - 127.5) / 127.5))

    return ExpressionNet()


def augment(x, gen):
    """Random flips, affine jitter, brightness/contrast and erasing on a (N, 1, 48, 48) float batch."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(12)
    scale = 0.85 + torch.rand(n, generator=gen) * 0.30
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.10 * 2  # in [-1, 1] grid units: 10 % of the side
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    contrast = 0.75 + torch.rand(n, 1, 1, 1, generator=gen) * 0.5
    bright = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 25
    x = ((x - mean) * contrast + mean + bright).clamp(0, 255)
    erase = torch.rand(n, generator=gen) < 0.25
    for i in torch.nonzero(erase).flatten().tolist():
        h, w = (int(v) for v in torch.randint(8, 20, (2,), generator=gen))
        top, left = (int(v) for v in torch.randint(0, 48 - 8, (2,), generator=gen))
        x[i, :, top : top + h, left : left + w] = float(torch.rand(1, generator=gen) * 255)
    return x


def evaluate(model, images: np.ndarray, labels: np.ndarray) -> dict:
    import torch

    model.eval()
    probs, probs_flip = [], []
    with torch.no_grad():
        for start in range(0, len(images), 256):
            x = torch.from_numpy(images[start : start + 256]).float()[:, None]
            p = torch.softmax(model(x), 1)
            probs.append(p.numpy())
            probs_flip.append(((p + torch.softmax(model(torch.flip(x, [3])), 1)) / 2).numpy())
    out = {}
    for tag, pr in (("plain", np.concatenate(probs)), ("flip", np.concatenate(probs_flip))):
        pred = pr.argmax(1)
        recall = {CLASSES[c]: float((pred[labels == c] == c).mean()) for c in range(len(CLASSES))}
        out[tag] = {"accuracy": float((pred == labels).mean()), "macro_recall": float(np.mean(list(recall.values()))),
                    "recall": recall}
    return out


def train(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_x, train_y = load_split(SHARED / "fer2013" / "Training")
    val_x, val_y = load_split(SHARED / "fer2013" / "PublicTest")
    print(f"loaded {len(train_x)} training / {len(val_x)} validation crops in {time.perf_counter() - t0:.0f} s",
          flush=True)
    model = build_model(args.seed)
    counts = np.bincount(train_y, minlength=len(CLASSES))
    weights = torch.tensor((len(train_y) / (len(CLASSES) * counts)) ** 0.5, dtype=torch.float32)
    opt = torch.optim.AdamW([
        {"params": model.trunk.parameters(), "lr": args.lr},
        {"params": model.head.parameters(), "lr": args.lr * 10},
    ], weight_decay=args.weight_decay)
    steps_per_epoch = len(train_x) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = min(300, total // 10)
    cycle_start, cycle_peak = 0, 1.0  # the cosine cycle's first step and its peak, relative to --lr
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(args.seed)
    xs = torch.from_numpy(train_x).float()[:, None]
    ys = torch.from_numpy(train_y)
    log = []
    step = 0
    start_epoch = 0
    resume = out / "last.pt"
    if args.resume and resume.exists():
        state = torch.load(resume, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start_epoch, step, log = state["epoch"], state["step"], state["log"]
        print(f"resumed after epoch {start_epoch}", flush=True)
        if "cycle" in state and not args.restart:  # an interrupted restart cycle goes on where it stopped
            cycle_start, cycle_peak, total, warmup = state["cycle"]
        if args.restart:
            # a warm restart (SGDR): a new, shorter cosine cycle from the finished model; the checkpoint that
            # ends each cycle is kept as a snapshot, so the cycles' models can be averaged (snapshot ensemble)
            torch.save(state, out / f"snapshot-e{start_epoch}.pt")
            cycle_start, cycle_peak = step, args.restart
            total = steps_per_epoch * (args.epochs - start_epoch)
            warmup = min(100, total // 10)
            log.append({"restart_after_epoch": start_epoch, "peak_lr_scale": args.restart})
    for epoch in range(start_epoch, args.epochs):
        model.train()
        order = torch.randperm(len(xs), generator=gen)
        t_epoch, seen, loss_sum = time.perf_counter(), 0, 0.0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch : (b + 1) * args.batch]
            x = augment(xs[idx], gen)
            t = step - cycle_start
            lr_scale = cycle_peak * ((t + 1) / warmup if t < warmup else 0.5 * (1 + math.cos(math.pi * t / total)))
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * lr_scale
            loss = F.cross_entropy(model(x), ys[idx], weight=weights, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            loss_sum += float(loss) * len(idx)
            if b % 50 == 0:
                rate = seen / (time.perf_counter() - t_epoch)
                print(f"epoch {epoch + 1} step {b}/{steps_per_epoch} loss {loss_sum / seen:.4f} {rate:.0f} img/s",
                      flush=True)
        metrics = evaluate(model, val_x, val_y)
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "epoch_s": time.perf_counter() - t_epoch,
                 "publictest": metrics}
        log.append(entry)
        print(json.dumps(entry), flush=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "epoch": epoch + 1, "step": step, "log": log, "args": {k: str(v) if isinstance(v, Path) else v
                                                                  for k, v in vars(args).items()},
                    "cycle": (cycle_start, cycle_peak, total, warmup)},
                   resume)
    torch.save(torch.load(resume, weights_only=False), out / f"snapshot-e{args.epochs}.pt")
    write_log(out, log, vars(args), torch.__version__)


def write_log(out: Path, log: list[dict], args: dict, torch_version: str) -> None:
    (out / "log.json").write_text(json.dumps({
        "log": log, "wall_s": sum(e.get("epoch_s", 0) for e in log), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} CPUs", "torch": torch_version, "args": args}, indent=1, default=str))


def export(args: argparse.Namespace) -> None:
    """One checkpoint, or several (the ends of the cosine cycles: a snapshot ensemble), to one ONNX graph.
    Several are averaged as probabilities; the graph's output is the log of the average, so a softmax of
    it (what facelens applies) gives the averaged probabilities back."""
    import torch

    members = []
    for checkpoint in args.export:
        state = torch.load(checkpoint, weights_only=False)
        member = build_model(state["args"]["seed"])
        member.load_state_dict(state["model"])
        member.eval()
        members.append(member)

    class Ensemble(torch.nn.Module):
        def __init__(self, parts: list) -> None:
            super().__init__()
            self.parts = torch.nn.ModuleList(parts)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            probs = torch.stack([torch.softmax(m(x), 1) for m in self.parts]).mean(0)
            return torch.log(probs.clamp_min(1e-12))

    model = members[0] if len(members) == 1 else Ensemble(members)
    model.eval()
    args.onnx.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, 1, 48, 48)
    torch.onnx.export(model, (dummy,), str(args.onnx), input_names=["grey48"], output_names=["logits"],
                      dynamic_axes={"grey48": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)
    import onnxruntime as ort

    val_x, val_y = load_split(SHARED / "fer2013" / "PublicTest")
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    x = val_x.astype(np.float32)[:, None]
    logits = np.concatenate([session.run(None, {"grey48": x[i : i + 512]})[0] for i in range(0, len(x), 512)])
    logits_flip = np.concatenate([session.run(None, {"grey48": np.ascontiguousarray(x[i : i + 512, ..., ::-1])})[0]
                                  for i in range(0, len(x), 512)])

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    with torch.no_grad():
        reference = model(torch.from_numpy(x[:64])).numpy()
    print("max |onnx - torch| logit:", float(np.abs(reference - logits[:64]).max()))
    for tag, p in (("plain", softmax(logits)), ("flip", (softmax(logits) + softmax(logits_flip)) / 2)):
        pred = p.argmax(1)
        recall = [float((pred[val_y == c] == c).mean()) for c in range(len(CLASSES))]
        print(tag, "PublicTest accuracy", round(float((pred == val_y).mean()), 4), "macro recall",
              round(float(np.mean(recall)), 4), "recall", dict(zip(CLASSES, np.round(recall, 3).tolist(), strict=True)))
    digest = hashlib.sha256(args.onnx.read_bytes()).hexdigest()
    print("sha256", digest, "size", args.onnx.stat().st_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / ".cache" / "train-expression")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4, help="trunk learning rate (the new head gets 10x)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--restart", type=float, metavar="PEAK",
                    help="with --resume: start a new cosine cycle up to --epochs, its peak PEAK x --lr")
    ap.add_argument("--export", type=Path, nargs="+",
                    help="checkpoint(s) to export to ONNX instead of training (several: a snapshot ensemble)")
    ap.add_argument("--onnx", type=Path, default=REPO / "src" / "facelens" / "models" / "weights" /
                    "expression-facelens.onnx")
    args = ap.parse_args()
    export(args) if args.export else train(args)


if __name__ == "__main__":
    main()
