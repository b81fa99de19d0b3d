import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from alignctl.integrations.lightning import AlignmentCallback


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


torch.manual_seed(0)
x = torch.randn(1024, 20)
y = (x[:, 0] * x[:, 1] > 0).long()
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128)
trainer = L.Trainer(
    max_epochs=2, logger=CSVLogger("runs/lightning"), accelerator="cpu",
    callbacks=[AlignmentCallback(x[:512], y[:512], every_n_steps=8, stop_when="stop")],
    enable_progress_bar=False,
)  # fmt: skip
trainer.fit(Classifier(), loader)  # metrics.csv gets alignment/centroid_alignment, ...
