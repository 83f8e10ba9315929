import time, torch
from lyabook import rnn
from lyabook.population import Population, PopulationAdam
from lyabook.train import _graphed, _loss
dev = torch.device("cuda")
def t(fn, n=20):
    for _ in range(3): fn()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / n * 1e3
x = torch.rand(128, 28, 28, device=dev); y = torch.randint(0, 10, (128,), device=dev).expand(200, -1)
for name, drop in (("LSTM", 0.1), ("LSTM", 0.0), ("RNN", 0.0), ("GRU", 0.0)):
    pop = Population(rnn.CELLS[name], 200, 28, 64, 10, init_p=0.5, dropout=drop, bias=False).to(dev)
    opt = PopulationAdam(pop.parameters(), lr=1e-3)
    g = _graphed(opt, pop, opt, "classification")
    pop.train()
    step = t(lambda: g(x, y))
    draws = t(lambda: pop.random_draws(x))
    gg = g.graphs[next(iter(g.graphs))]["graph"]
    replay = t(lambda: gg.replay())
    with torch.no_grad():
        fwd = t(lambda: pop(x, draws={"dropout": None, "noise": None}))
    print(f"{name} dropout {drop}: step {step:.2f} ms, draws {draws:.2f} ms, replay {replay:.2f} ms, eager fwd (no grad) {fwd:.2f} ms", flush=True)
from torch.profiler import profile, ProfilerActivity
pop = Population(rnn.LSTM, 200, 28, 64, 10, init_p=0.5, bias=False).to(dev)
opt = PopulationAdam(pop.parameters(), lr=1e-3)
g = _graphed(opt, pop, opt, "classification"); g(x, y)
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    out, _ = pop(x); _loss(out, y, "classification")[0].sum().backward(); opt.step(); torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14))
