"""Run by test_hf_failure in a subprocess: a training step raises and nothing catches it (no guard).

The core's exit hook must see the exception at sys.excepthook and mark the run FAILED.
Usage: python hf_crash_script.py DASH_ROOT OUTPUT_DIR
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hf_tiny import Exploding, RegressionDataset  # noqa: E402
from ml_dash_hf import MLDashCallback  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

dash_root, output_dir = sys.argv[1], sys.argv[2]
args = TrainingArguments(
    output_dir=output_dir,
    report_to="none",
    use_cpu=True,
    per_device_train_batch_size=4,
    max_steps=8,
    logging_steps=1,
    save_strategy="no",
    disable_tqdm=True,
    remove_unused_columns=False,
    dataloader_pin_memory=False,
)
trainer = Trainer(
    model=Exploding(fail_at=5),
    args=args,
    train_dataset=RegressionDataset(32),
    callbacks=[MLDashCallback("hf-tests/crash", dash_root=dash_root)],
)
trainer.train()
print("NOT REACHED")
