import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "src")
import torch
from mnistbench.config import RunSpec
from mnistbench.data import load_dataset
from mnistbench.data.fetch import fetch_dataset
from mnistbench.data.registry import MNIST
from mnistbench.train_torch import run, dataloader_batches, memory_batches, epoch_generator

root = Path(tempfile.mkdtemp())
fetch_dataset(MNIST, root, from_path=Path("gpu-pack"), log=lambda l: None)
data = load_dataset("mnist", root)
cuda = torch.device("cuda")
spec = RunSpec(dataset="mnist", model="resnet18", batch_size=32, epochs=1, train_limit=3200,
               test_limit=512, device="cuda", amp=True, loader="dataloader", pin_memory=True,
               num_workers=2, optimizer="adam", lr=1e-3, lr_schedule="none")
imgs, labels = data.train_images[:3200], data.train_labels[:3200]
print("dtypes", imgs.dtype, labels.dtype, flush=True)
dl = list(dataloader_batches(imgs, labels, spec, epoch_generator(0, 1), cuda))
mem = list(memory_batches(imgs.to(cuda), labels.to(cuda), 32, epoch_generator(0, 1)))
same = [torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(dl, mem)]
print("batches equal:", sum(same), "of", len(same), len(dl), len(mem), dl[0][0].dtype, dl[0][1].dtype, flush=True)
for loader, pin, amp, opt in [("memory", False, True, "adam"), ("dataloader", True, True, "adam"),
                          ("dataloader", False, True, "adam"), ("dataloader", True, False, "adam"),
                          ("memory", False, True, "sgd"), ("dataloader", False, False, "sgd")]:
    t = time.time()
    try:
        r = run(spec.replace(loader=loader, pin_memory=pin, amp=amp, optimizer=opt), data)
        print(loader, pin, amp, opt, r.status, r.message, [h.get("train_loss") for h in r.history], r.test_accuracy, f"{time.time()-t:.1f}s", flush=True)
    except Exception as e:
        import traceback; traceback.print_exc()
