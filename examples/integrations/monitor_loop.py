import torch

import alignctl

torch.manual_seed(0)
x = torch.randn(1024, 20)
y = (x[:, 0] * x[:, 1] > 0).long()  # a task the network must learn, not look up
model = alignctl.MODELS.get("mlp")(in_features=20, hidden=[64, 64], out_features=2)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

with alignctl.Monitor(
    model, x[:512], y[:512], every=100, metrics="fast", out="runs/monitor",
    save_checkpoints=True,  # so `alignctl analyze runs/monitor` can re-measure anything
    model_config={"arch": "mlp", "in_features": 20, "hidden": [64, 64], "out_features": 2},
    stop_when="stop", overwrite=True,
) as mon:  # fmt: skip
    for step in range(301):
        idx = torch.randint(0, len(x), (128,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mon.step(step):  # True once the recommendation is `stop`
            break
print(mon.recommendation())
