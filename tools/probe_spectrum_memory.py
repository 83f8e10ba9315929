"""Where does population_exponents' GPU memory go? Prints memory after every engine call, twice
over, then what gc.collect frees. Usage: python tools/probe_spectrum_memory.py [networks] (on a GPU);
``--gc``: what Python's cycle collector finds after one `_householder_blocked` call on the GPU.

Made for the charrnn-512 population, which ran out of memory (140 GiB, an H200) at its second
spectrum epoch, 2026-11-28. It showed (75 networks of 512 units, 15 sequences): about 16 GiB still
allocated after each 255-frame call of full-state spectra, freed only by gc.collect, so the memory
piled up over the calls until the cycle collector ran. The cause: `_householder_blocked`'s
recursive closure `factor` (a function-cell reference cycle holding A, V and the T blocks); fixed
by deleting it after use (tests/test_engine.py::test_householder_blocked_leaves_nothing_for_the_cycle_collector).
"""
import gc, sys, time
import torch
import lyabook.population as P
from lyabook.train import PopulationLSTM

dev = torch.device("cuda")
if sys.argv[1:2] == ["--gc"]:  # what the cycle collector finds after one QR on the GPU, per panel
    from collections import Counter

    from lyabook import lyapunov, triton_qr

    X = torch.randn(3, 40, 40, dtype=torch.float64, device=dev)
    for name, panel in (("torch", lyapunov._panel_torch), ("triton", triton_qr.panel)):
        lyapunov._householder_blocked(X, base=8, q_block=16, panel=panel)
        gc.collect(); gc.disable(); gc.set_debug(gc.DEBUG_SAVEALL)
        lyapunov._householder_blocked(X, base=8, q_block=16, panel=panel)
        gc.collect()
        print(name, "panel:", Counter(type(o).__name__ for o in gc.garbage).most_common(8))
        print("  tensors:", [(tuple(o.shape), o.device.type) for o in gc.garbage if torch.is_tensor(o)][:12])
        print("  functions:", [getattr(o, "__qualname__", "?") for o in gc.garbage if callable(o)][:12])
        gc.set_debug(0); gc.garbage.clear(); gc.enable()
    sys.exit(0)
nets, hidden, V = int(sys.argv[1]) if len(sys.argv) > 1 else 75, 512, 82
GiB = 2 ** 30
orig = P.lyapunov_spectrum
def spy(*a, **k):
    t0 = time.perf_counter()
    r = orig(*a, **k)
    torch.cuda.synchronize()
    print(f"  call {tuple(k['inputs'].shape)}: {time.perf_counter() - t0:.1f} s, allocated "
          f"{torch.cuda.memory_allocated() / GiB:.2f} GiB, reserved {torch.cuda.memory_reserved() / GiB:.2f}, "
          f"peak {torch.cuda.max_memory_allocated() / GiB:.2f}", flush=True)
    return r
P.lyapunov_spectrum = spy
pop = PopulationLSTM(nets, V, hidden, V, init_p=torch.linspace(0.05, 0.4, nets), bias=False, seed=0).to(dev)
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, V, (15, 200), generator=g)
x = torch.nn.functional.one_hot(ids, V).float().to(dev)
print(f"start: allocated {torch.cuda.memory_allocated() / GiB:.2f} GiB")
for rep in range(2):
    for conv in ("full", "h_block"):
        P.population_exponents(pop, x, warmup=100, convention=conv, networks=[True] * 40 + [False] * (nets - 40))
        print(f"after {conv} #{rep}: allocated {torch.cuda.memory_allocated() / GiB:.2f} GiB", flush=True)
    n = gc.collect()
    print(f"gc.collect: {n} objects; allocated {torch.cuda.memory_allocated() / GiB:.2f} GiB", flush=True)
