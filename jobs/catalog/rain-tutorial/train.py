"""Rain in Australia, the Qarnot tutorial's way (seed 000): the user's own script.

Its own preprocessing (rows without a label dropped, missing values filled with the column's
median or mode, categories one-hot), a 3-layer MLP, Adam, cross-entropy, 75% of the rows to train
and 25% to test.  It runs as it is on a laptop or in a plain Qarnot task:

    python train.py --data weatherAUS.csv --epochs 200 --out out/

Under qtrain it also reports what qtrain shows and keeps: an epoch line per epoch (live in `qtrain
run`), the test predictions (qtrain computes accuracy, F1, ... and the confusion matrix), a
checkpoint each epoch (`qtrain resume` hands it back) and the model.  Each qtrain call is guarded,
so the script needs nothing of qtrain to run.
"""

import argparse
import os

import numpy as np
import pandas as pd
import torch
from torch import nn

try:  # qtrain's reporting API: present in qtrain's runner image and wherever qtrain is installed
    from runner import script as qtrain
except ImportError:
    qtrain = None


def load(path):
    frame = pd.read_csv(path).drop(columns=["Date"], errors="ignore")
    frame = frame.dropna(subset=["RainTomorrow"])
    target = (frame.pop("RainTomorrow") == "Yes").astype(np.int64).to_numpy()
    numeric = frame.select_dtypes("number").columns
    categorical = [c for c in frame.columns if c not in numeric]
    frame[numeric] = frame[numeric].fillna(frame[numeric].median())
    for column in categorical:
        frame[column] = frame[column].fillna(frame[column].mode().iloc[0])
    frame = pd.get_dummies(frame, columns=categorical, dtype=np.float32)
    return frame.to_numpy(np.float32), target


class Net(nn.Module):
    def __init__(self, features, hidden=64):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2),
                                    nn.ReLU(), nn.Linear(hidden // 2, 2))

    def forward(self, x):
        return self.layers(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="weatherAUS.csv")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)

    x, y = load(args.data)
    order = np.random.default_rng(args.seed).permutation(len(y))
    cut = int(len(y) * 0.75)
    train, test = order[:cut], order[cut:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6  # scaled with the training rows' numbers only
    x = (x - mean) / std
    x_train, y_train = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    x_test, y_test = torch.from_numpy(x[test]), torch.from_numpy(y[test])

    model = Net(x.shape[1], args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    start = 0
    state = qtrain.load_checkpoint() if qtrain else None  # a resumed run goes on from its last epoch
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
    steps = qtrain.max_steps() if qtrain else None  # a smoke run: a few epochs only
    last = min(args.epochs, start + steps) if steps else args.epochs

    for epoch in range(start + 1, last + 1):  # full-batch, as the tutorial
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model(x_train), y_train)
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            test_loss = loss_fn(model(x_test), y_test).item()
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        if qtrain:
            qtrain.log_epoch(epoch, args.epochs, train_loss=loss.item(), val_loss=test_loss, val_accuracy=accuracy)
            qtrain.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, epoch=epoch)
        elif epoch % 50 == 0 or epoch == last:
            print(f"epoch {epoch}/{args.epochs} loss {loss.item():.4f} test accuracy {accuracy:.4f}", flush=True)

    model.eval()
    with torch.no_grad():
        proba = torch.softmax(model(x_test), dim=1)
    torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))
    pd.DataFrame({"true": y_test.numpy(), "predicted": proba.argmax(1).numpy()}).to_csv(
        os.path.join(args.out, "predictions.csv"), index=False)
    if qtrain:
        qtrain.log_predictions(y_test, proba.argmax(1), proba=proba, classes=["No", "Yes"])


if __name__ == "__main__":
    main()
