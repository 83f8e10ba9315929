"""Time the pixel-flipping network's training step (Chapter 4: one 512-unit tanh RNN, RMSprop, batches of
100 permuted images of 784 pixels) on a GPU, on random data. 2026-11-27, H200: 46 ms per batch, so about 23 s per
epoch of 500 batches and 20 minutes for the 51 epochs. Usage: PYTHONPATH=. python tools/time_pixelflip_training.py"""
import time, torch
from lyabook import rnn, pixelflip
from lyabook.population import Population, PopulationRMSprop
from lyabook.train import train_epoch
dev = torch.device("cuda")
pop = Population(rnn.RNN, 1, 1, 512, 10, init_p=1.0, seed=400, init=pixelflip.authors_init(1, 512)).to(dev)
opt = PopulationRMSprop(pop.parameters(), lr=2e-4)
g = torch.Generator().manual_seed(0)
b = [(torch.rand(100, 784, 1, generator=g), torch.randint(0, 10, (100,), generator=g)) for _ in range(30)]
for n in (5, 30):
    torch.cuda.synchronize(); t = time.perf_counter()
    train_epoch(pop, opt, b[:n], "classification", None)
    torch.cuda.synchronize(); print(f"{n} batches: {time.perf_counter() - t:.2f} s", flush=True)
