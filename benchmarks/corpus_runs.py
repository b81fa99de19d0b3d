"""The runs of the verdict corpus (benchmarks/verdict_corpus.py): one spec per run, its family
(the unit that leave-one-family-out holds out) and the actions a researcher would accept."""

from __future__ import annotations

CHANGE = ["try-grokalign", "increase-lambda"]  # "change something" (weight decay in the reason)


def plain(name, family, data, model, *, steps, accept, loss="ce", opt="adamw", lr=1e-3, wd=0.0,
          batch=None, momentum=0.0, fmt="safetensors", seed=0, note=""):  # fmt: skip
    """A run trained by the builder's own PyTorch loop; ``data`` is (generator, kwargs)."""
    d_name, d_kw = data
    return dict(name=name, family=family, loop="plain", data=d_name, data_kw=d_kw, model=model,
                steps=steps, accept=accept, loss=loss, opt=opt, lr=lr, wd=wd, batch=batch,
                momentum=momentum, fmt=fmt, seed=seed, note=note)  # fmt: skip


def trained(name, family, config, *, epochs, accept, data=None, note=""):
    """A run made by ``alignctl train --config``; ``data`` (name, kwargs) writes a data file
    that the config's ``data: {path: ...}`` reads."""
    return dict(name=name, family=family, loop="alignctl", config=config, epochs=epochs,
                accept=accept, data=data[0] if data else None,
                data_kw=data[1] if data else {}, seed=0, note=note)  # fmt: skip


def opt(name="adamw", lr=1e-3, wd=0.0, momentum=0.0):
    return {"name": name, "lr": lr, "weight_decay": wd, "momentum": momentum}


# fmt: off
MLP64 = {"kind": "mlp", "d": 64, "hidden": [128, 128], "c": 10}
WIDE = {**MLP64, "hidden": [256, 256]}
LN = {**MLP64, "act": "gelu", "layernorm": True}
RUNS = [
    # digits, plain MLPs: fit and generalise; nothing to change
    plain("digits-mlp-adamw", "digits-mlp", ("digits", {}), MLP64, steps=1500,
          accept=["stop"], note="bias, AdamW, cross-entropy"),
    plain("digits-mlp-nobias-sgd-mse", "digits-mlp", ("digits", {}), {**MLP64, "bias": False},
          steps=3000, loss="mse", opt="sgd", lr=0.05, momentum=0.9,
          accept=["stop", "keep-training"], note="no bias, SGD, squared error", fmt="pt"),
    plain("digits-mlp-wd-minibatch", "digits-mlp", ("digits", {}), MLP64, steps=2000, batch=64,
          wd=0.05, accept=["stop"], note="AdamW weight decay 0.05, batch 64"),
    # digits, CNN with BatchNorm
    plain("digits-cnn-bn-adamw", "digits-cnn-bn", ("digits", {"image": True}),
          {"kind": "cnn_bn"}, steps=800, lr=3e-3, accept=["stop"]),
    plain("digits-cnn-bn-sgd-wd", "digits-cnn-bn", ("digits", {"image": True, "seed": 1}),
          {"kind": "cnn_bn"}, steps=1200, opt="sgd", lr=0.05, momentum=0.9, wd=5e-4, batch=100,
          accept=["stop"], fmt="pt"),
    # digits, LayerNorm (+ dropout), GELU
    plain("digits-ln-dropout", "digits-ln-gelu", ("digits", {}), {**LN, "dropout": 0.2},
          steps=1500, accept=["stop", "keep-training"]),
    plain("digits-ln-gelu-wd", "digits-ln-gelu", ("digits", {"seed": 2}), LN, steps=1500,
          wd=0.1, accept=["stop"]),
    # label noise: generalises first, then memorises the noise (test accuracy falls)
    plain("digits-noise40", "label-noise", ("digits", {"noise": 0.4}), WIDE, steps=3000,
          lr=3e-3, accept=["stop"], note="40% wrong labels; overfits after generalising"),
    plain("digits-noise25-pt", "label-noise", ("digits", {"noise": 0.25, "seed": 3}), WIDE,
          steps=3000, lr=3e-3, accept=["stop"], fmt="pt"),
    # random labels: memorisation that no regulariser can turn into generalisation
    plain("digits-random-labels", "random-labels", ("digits", {"random_labels": True}), WIDE,
          steps=2500, lr=3e-3, accept=["investigate"]),
    plain("gmm-random-labels-tanh", "random-labels", ("gmm", {"random_labels": True}),
          {"kind": "mlp", "d": 16, "hidden": [256, 256], "c": 4, "act": "tanh"}, steps=5000,
          lr=3e-3, accept=["investigate"]),
    # Gaussian mixture, tanh / GELU
    plain("gmm-tanh", "gmm", ("gmm", {"sep": 3.0}),
          {"kind": "mlp", "d": 16, "hidden": [64, 64], "c": 4, "act": "tanh"}, steps=1500,
          accept=["stop"]),
    plain("gmm-gelu-sgd-logit", "gmm", ("gmm", {"sep": 3.0, "seed": 1}),
          {"kind": "mlp", "d": 16, "hidden": [64], "c": 4, "act": "gelu"}, steps=2000,
          opt="sgd", lr=0.1, wd=1e-3, accept=["stop", "keep-training"], fmt="pt"),
    # modular addition with embeddings (token model), plain loop
    plain("modadd-embed-wd", "modadd-embed", ("modadd", {"tokens": True, "frac": 0.7}),
          {"kind": "token", "p": 23}, steps=3000, lr=1e-2, wd=1.0,
          accept=["stop", "keep-training"], note="grokking: late generalisation"),
    plain("modadd-embed-nowd", "modadd-embed", ("modadd", {"tokens": True, "seed": 1}),
          {"kind": "token", "p": 23}, steps=3000, lr=3e-3, accept=CHANGE,
          note="memorises; test accuracy stays low"),
    # scalar output: the small XOR cluster (logistic, no bias) and a binary mixture (mse)
    plain("xor-scalar-logistic", "scalar", ("xor", {}),
          {"kind": "scalar_mlp", "d": 40, "hidden": [256], "bias": False}, steps=3000,
          loss="logistic", opt="sgd", lr=0.1, wd=0.01, accept=["stop", "keep-training"]),
    plain("gmm-scalar-mse", "scalar", ("gmm", {"scalar": True, "sep": 3.0, "seed": 2}),
          {"kind": "scalar_mlp", "d": 16, "hidden": [64, 64]}, steps=1500, loss="mse",
          accept=["stop"]),
    # pathologies: divergence and underfitting
    plain("digits-diverge", "pathology", ("digits", {}), {**MLP64, "init_scale": 2.0},
          steps=400, loss="mse", opt="sgd", lr=3.0, accept=["investigate"],
          note="learning rate too large"),
    plain("gmm-underfit", "pathology", ("gmm", {"sep": 0.8, "seed": 4}),
          {"kind": "mlp", "d": 16, "hidden": [2], "c": 4}, steps=1500, lr=1e-3,
          accept=["investigate", "keep-training"], note="width-2 network cannot fit"),
]

PARITY_MODEL = {"arch": "mlp", "in_features": 30, "hidden": [128, 128], "out_features": 2}
PARITY_TRAIN = {"loss": "cross_entropy", "optimizer": opt(lr=0.01, wd=0.1)}
PARITY = {"model": PARITY_MODEL, "data": {"path": "DATA"}, "train": PARITY_TRAIN}
MODADD_MODEL = {"arch": "mlp", "in_features": 46, "hidden": [128], "out_features": 23}
MODADD_DATA = {"task": "modular-addition", "p": 23, "train_fraction": 0.7}
RUNS += [
    # sparse parity with alignctl train (0/1 and +-1 inputs), with and without GrokAlign
    trained("parity01-baseline", "sparse-parity", PARITY, data=("parity", {}), epochs=3000,
            accept=["stop", "keep-training"], note="grokking"),
    trained("paritypm1-baseline", "sparse-parity", PARITY, data=("parity", {"pm1": True}),
            epochs=1500, accept=CHANGE, note="+-1 inputs: memorises"),
    trained("parity01-grokalign", "grokalign",
            {**PARITY, "train": {**PARITY_TRAIN,
                                 "regularisers": [{"name": "grokalign", "lambda": 0.1}]}},
            data=("parity", {"seed": 1}), epochs=300, accept=["stop", "keep-training"]),
    trained("digits-grokalign", "grokalign",
            {"model": {"arch": "mlp", "in_features": 64, "hidden": [128, 128],
                       "out_features": 10},
             "data": {"task": "digits", "n_train": 500},
             "train": {"loss": "cross_entropy", "optimizer": opt(lr=1e-3),
                       "regularisers": [{"name": "grokalign", "lambda": 0.01}]}},
            epochs=600, accept=["stop", "keep-training"]),
    # modular addition, one-hot MLP, alignctl train
    trained("modadd-onehot-wd", "modadd-onehot",
            {"model": MODADD_MODEL, "data": MODADD_DATA,
             "train": {"loss": "cross_entropy", "optimizer": opt(lr=1e-2, wd=1.0)}},
            epochs=3000, accept=["stop", "keep-training"], note="grokking"),
    trained("modadd-onehot-nowd", "modadd-onehot",
            {"model": MODADD_MODEL, "data": {"task": "modular-addition", "p": 23, "seed": 1},
             "train": {"loss": "cross_entropy", "optimizer": opt(lr=3e-3)}},
            epochs=2000, accept=CHANGE, note="memorises"),
    trained("modadd-onehot-mse", "modadd-onehot",
            {"model": MODADD_MODEL, "data": {**MODADD_DATA, "seed": 2},
             "train": {"loss": "mse", "optimizer": opt(lr=1e-2, wd=1.0)}},
            epochs=3000, accept=["stop", "keep-training"]),
]
# fmt: on
