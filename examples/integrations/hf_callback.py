import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)  # fmt: skip

from alignctl.integrations.transformers import AlignmentCallback

torch.manual_seed(0)
ids = torch.randint(1, 100, (128, 8))  # token ids: the Jacobian is taken at the embeddings
labels = (ids[:, 0] > 50).long()
rows = [{"input_ids": i, "labels": label} for i, label in zip(ids, labels, strict=True)]
config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, num_labels=2)  # fmt: skip
model = BertForSequenceClassification(config)  # built from a config: nothing is downloaded

args = TrainingArguments(
    "runs/hf", max_steps=20, per_device_train_batch_size=16, logging_steps=10,
    report_to=["tensorboard"], use_cpu=True, save_strategy="no", disable_tqdm=True,
)  # fmt: skip
trainer = Trainer(
    model=model, args=args, train_dataset=rows,
    callbacks=[AlignmentCallback(ids[:64], labels[:64], every_n_steps=10, stop_when="stop")],
)  # fmt: skip
trainer.train()  # TensorBoard and state.log_history get alignment/centroid_alignment, ...
print([h for h in trainer.state.log_history if "alignment/centroid_alignment" in h][-1])
