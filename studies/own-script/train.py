"""An ordinary training script, written with no thought of tuneplay: argparse flags, losses
printed to the terminal, its own checkpoint file (``<out_dir>/ckpt.pt``) and ``--resume``.

A small MLP on scikit-learn's bundled digits (offline, seconds on a CPU). The study file
``studies/own-script.toml`` tunes it as it is.

    python train.py --learning_rate=0.003 --layernorm --max_iters=300
"""

import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--learning_rate", type=float, default=1e-3)
parser.add_argument("--weight_decay", type=float, default=0.0)
parser.add_argument("--width", type=int, default=64)
parser.add_argument("--batch_size", type=int, default=64)
parser.add_argument("--max_iters", type=int, default=300)
parser.add_argument("--eval_interval", type=int, default=50)
parser.add_argument("--layernorm", action="store_true", help="normalise the hidden layer")
parser.add_argument("--out_dir", default="out")
parser.add_argument("--seed", type=int, default=1337)
parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/ckpt.pt")
args = parser.parse_args()

torch.manual_seed(args.seed)
torch.set_num_threads(1)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
y = torch.tensor(digits.target)
x_train, y_train, x_val, y_val = x[:1500], y[:1500], x[1500:], y[1500:]

model = nn.Sequential(
    nn.Linear(64, args.width),
    nn.LayerNorm(args.width) if args.layernorm else nn.Identity(),
    nn.ReLU(),
    nn.Linear(args.width, 10),
)
optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
ckpt_path = os.path.join(args.out_dir, "ckpt.pt")
start = 0
if args.resume and os.path.exists(ckpt_path):
    ckpt = torch.load(ckpt_path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    start = ckpt["iter"] + 1
    print(f"resuming from iteration {start}")
os.makedirs(args.out_dir, exist_ok=True)


@torch.no_grad()
def evaluate() -> tuple[float, float]:
    model.eval()
    logits = model(x_val)
    model.train()
    return F.cross_entropy(logits, y_val).item(), (logits.argmax(1) != y_val).float().mean().item()


for it in range(start, args.max_iters):
    batch = torch.randint(0, len(x_train), (args.batch_size,))
    loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if it % args.eval_interval == 0 or it == args.max_iters - 1:
        val_loss, val_error = evaluate()
        print(f"step {it}: train loss {loss.item():.4f}, val loss {val_loss:.4f}, val error {val_error:.4f}")
        # written aside, then renamed: a stop (SIGTERM) mid-save never leaves a torn ckpt.pt
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(), "iter": it}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)
print("done")
