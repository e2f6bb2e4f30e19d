"""DDP and FSDP2 (gloo, 2 CPU processes) train like one process on the whole batch."""

import socket

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402

import fewbit_design.torch as ft  # noqa: E402

WORLD, STEPS, LR = 2, 4, 0.1


def make_mlp(tables):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), ft.GELU(table=tables["gelu"]), nn.Linear(32, 32),
                         ft.SiLU(table=tables["silu"]), nn.Linear(32, 3))


def train(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for x, y in batches:
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def _worker(rank, port, tables, data, out_path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = make_mlp(tables)
        ddp = nn.parallel.DistributedDataParallel(model)
        train(ddp, [(x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]) for x, y in data])
        if rank == 0:
            torch.save(model.state_dict(), out_path)
    finally:
        dist.destroy_process_group()


def _fsdp_worker(rank, port, tables, data, out_path):
    from torch.distributed.fsdp import fully_shard
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = make_mlp(tables)
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)  # parameters become DTensor shards; few-bit modules hold no parameters
        train(model, [(x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]) for x, y in data])
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}
        if rank == 0:
            torch.save(state, out_path)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
@pytest.mark.parametrize("worker", [_worker, _fsdp_worker], ids=["ddp", "fsdp2"])
def test_ddp_matches_single_process(tmp_path, worker):
    from fewbit_design.designer import design  # here, so that the workers do not import it
    tables = {"gelu": design("gelu", 3), "silu": design("silu", 2)}
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 6, generator=gen), torch.randn(16, 3, generator=gen)) for _ in range(STEPS)]
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(free_port(), tables, data, str(out)), nprocs=WORLD, join=True)

    single = make_mlp(tables)
    start = {k: v.clone() for k, v in single.state_dict().items()}
    train(single, data)
    got = torch.load(out)
    for key, want in single.state_dict().items():
        if key.endswith("_extra_state"):  # the tables
            assert torch.equal(got[key], want)
            continue
        assert not torch.equal(want, start[key])  # it trained
        torch.testing.assert_close(got[key], want, rtol=0, atol=1e-6)
