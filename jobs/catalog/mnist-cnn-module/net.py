"""The seed-004 notebook's CNN, as the notebook writes it: three conv + max-pool blocks and two
dense layers, for 28x28 grey images (MNIST).  qtrain passes in_channels and num_classes (the
notebook's 1 and 10 are the defaults), trains it with its own loop, and keeps it with this code."""

import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5)
        self.conv2 = nn.Conv2d(32, 32, 5)
        self.conv3 = nn.Conv2d(32, 64, 3)
        self.dense1 = nn.Linear(64, 64)
        self.dense2 = nn.Linear(64, num_classes)
        self.maxpool1 = nn.MaxPool2d((2, 2), stride=(2, 2))

    def forward(self, x):
        # Conv/pool: (Batch size, 1, 28, 28) -> (Batch size, 32, 24, 24) -> (Batch size, 32, 12, 12)
        x = F.relu(self.conv1(x))
        x = self.maxpool1(x)
        # Conv/pool: (Batch size, 32, 12, 12) -> (Batch size, 32, 8, 8) -> (Batch size, 32, 4, 4)
        x = F.relu(self.conv2(x))
        x = self.maxpool1(x)
        # Conv/pool: (Batch size, 32, 4, 4) -> (Batch size, 64, 2, 2) -> (Batch size, 64, 1, 1)
        x = F.relu(self.conv3(x))
        x = self.maxpool1(x)
        # Flatten: (Batch size, 64, 1, 1) -> (Batch size, 64)
        x = x.view(-1, 64)
        # Dense layer 1: (Batch size, 64) -> (Batch size, 64)
        x = F.relu(self.dense1(x))
        # Dense layer 2: (Batch size, 64) -> (Batch size, 10)
        return self.dense2(x)
