"""train: the DiT and VAE trainers on tiny configs, exact resume, atomic checkpoints, configs.

Every run is a handful of steps of a width-32 DiT on 16-px Shapes World latents.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

import train.train_dit as train_dit
from pipelines.components import vae_tiny
from pipelines.text_to_video import ShapesVideoPipeline
from tests.conftest import losses, reset_accelerate
from train import config as config_mod
from train.checkpoint import checkpoint_step, latest_checkpoint, save_checkpoint
from train.config import (
    ConfigError,
    DiTTrainConfig,
    VAETrainConfig,
    load_config,
    resolve_mixed_precision,
)

TINY_STAGES = """\
model: {size: dit_tiny, patch_size: 2}
data: {size: 16, clip_frames: 8, cache_clips: 8, cache_images: 8, cache_dir: CACHE}
stages:
  - {name: images, steps: 2, frames: 1, image_batch_size: 2}
  - {name: clips, steps: 4, frames: 4, batch_size: 2, image_every: 2}
warmup: 2
log_every: 1
sample_every: 0
mixed_precision: "no"
"""
TOTAL_STEPS = 6


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    vae_tiny(sample_size=16).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One latent cache for all runs of this module (its key covers VAE and data config)."""
    return tmp_path_factory.mktemp("latents")


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory, vae_dir, cache_dir):
    yaml = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    yaml.write_text(TINY_STAGES.replace("CACHE", str(cache_dir)) + f"vae: {vae_dir}\n")
    return yaml


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _make_config(yaml, runs_dir, name: str, *overrides: str) -> DiTTrainConfig:
    return load_config(DiTTrainConfig, yaml, [f"output_dir={runs_dir / name}", *overrides])


@pytest.fixture
def dit_config(tiny_yaml, runs_dir, text_encoder, monkeypatch):
    """Build a tiny DiTTrainConfig from YAML + overrides; MiniLM comes from the session."""
    monkeypatch.setattr(train_dit, "load_text_encoder", lambda spec, dtype=None: text_encoder)
    return lambda name, *overrides: _make_config(tiny_yaml, runs_dir, name, *overrides)


@pytest.fixture(scope="module")
def straight_run(tiny_yaml, runs_dir, text_encoder):
    """Run A: all N steps without interruption → (config, exported pipeline folder)."""
    cfg = _make_config(tiny_yaml, runs_dir, "A", "save_every=100", "sample_image_first=true")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_dit, "load_text_encoder", lambda spec, dtype=None: text_encoder)
        reset_accelerate()
        final = train_dit.main(cfg)
        reset_accelerate()
    return cfg, final


# -------------------------------------------------------------------------- DiT trainer
def test_dit_training_exports_a_loadable_pipeline(straight_run, text_encoder):
    cfg, final = straight_run
    out = cfg.output_dir
    assert final.name == "pipeline" and (final / "model_index.json").is_file()
    log = losses(Path(out))
    assert sorted(log) == list(range(1, TOTAL_STEPS + 1))
    assert all(0 < v < 10 for v in log.values())
    # the resolved config is saved with the run and loads back to the same config
    assert load_config(DiTTrainConfig, f"{out}/config.yaml") == cfg
    # two checkpoints kept (keep=2), the last one at the final step
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and checkpoint_step(ckpt) == TOTAL_STEPS

    encoder, tokenizer = text_encoder
    pipe = ShapesVideoPipeline.from_pretrained(final, text_encoder=encoder, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.width == 32 and pipe.transformer.config.depth == 2
    assert pipe.scheduler.config.shift == cfg.timestep_shift  # sampled as it was trained
    assert pipe.config.image_first is True  # sample_image_first is the saved default
    assert any(b.gate_temporal.abs().sum() > 0 for b in pipe.transformer.blocks)  # it trained
    video = pipe(
        "a red square",
        num_frames=2,
        height=16,
        width=16,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert video.shape == (1, 2, 16, 16, 3)


def test_resume_reproduces_the_uninterrupted_run(dit_config, straight_run):
    """Run A: N steps straight. Run B: stop at k (checkpoint), then rerun to N."""
    k = 3
    a = losses(Path(straight_run[0].output_dir))

    first = dit_config("B", f"max_steps={k}", f"save_every={k}")
    train_dit.main(first)
    b_dir = Path(first.output_dir)
    assert sorted(losses(b_dir)) == list(range(1, k + 1))
    assert checkpoint_step(latest_checkpoint(b_dir)) == k
    reset_accelerate()

    rest = dit_config("B", f"save_every={k}")
    train_dit.main(rest)
    b = losses(b_dir)
    assert sorted(b) == list(range(1, TOTAL_STEPS + 1))
    for step in range(1, TOTAL_STEPS + 1):
        assert b[step] == pytest.approx(a[step], abs=1e-5), step
    # the losses move, so matching them is not trivially true
    assert len({round(v, 6) for v in a.values()}) == TOTAL_STEPS


def test_resume_after_a_stop_between_checkpoints(dit_config, straight_run):
    """Killed after step 5 was logged but before its checkpoint: the rerun goes back to the
    step-4 checkpoint, repeats step 5, and the log still holds every step once."""
    a = losses(Path(straight_run[0].output_dir))

    run = dit_config("C", "max_steps=5", "save_every=4")
    train_dit.main(run)
    out = Path(run.output_dir)
    shutil.rmtree(out / "checkpoints" / "step-0000005")  # as if the kill came before it
    with (out / "log.jsonl").open("a") as fh:
        fh.write('{"step": 6, "lo')  # and cut a log line in half
    assert checkpoint_step(latest_checkpoint(out)) == 4
    reset_accelerate()

    train_dit.main(dit_config("C", "save_every=4"))
    c = losses(out)  # asserts steps 1..N, each once
    assert sorted(c) == list(range(1, TOTAL_STEPS + 1))
    for step in range(1, TOTAL_STEPS + 1):
        assert c[step] == pytest.approx(a[step], abs=1e-5), step


def test_time_limit_checkpoints_exports_and_resumes(dit_config, straight_run):
    """time_limit_minutes: the first step past the limit ends the run with a checkpoint and
    an exported pipeline; the same run without the limit then resumes to the end. With the
    binding hard negatives and a text refiner on, which these tiny runs also exercise."""
    refiner = "model.text_refiner_layers=1"  # and the text refiner the binding runs add
    run = dit_config(
        "D", "time_limit_minutes=1e-9", "save_every=100", "binding_weight=0.5", refiner
    )
    final = train_dit.main(run)
    out = Path(run.output_dir)
    assert sorted(losses(out)) == [1] and checkpoint_step(latest_checkpoint(out)) == 1
    assert (final / "model_index.json").is_file()
    assert (
        json.loads((final / "transformer" / "config.json").read_text())["text_refiner_layers"] == 1
    )
    reset_accelerate()
    train_dit.main(dit_config("D", "save_every=100", "binding_weight=0.5", refiner))
    log = losses(out)
    assert sorted(log) == list(range(1, TOTAL_STEPS + 1))
    assert all(math.isfinite(v) for v in log.values())


def test_ctrl_c_finishes_the_step_checkpoints_it_and_resumes_exactly(
    dit_config, straight_run, monkeypatch
):
    """A real SIGINT in step 2: the step finishes, is checkpointed (save_every is far off),
    and the run stops as Ctrl-C asks; the rerun goes on from step 2 and matches run A."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    real = train_dit.batch_loss

    def loss_then_ctrl_c(cfg, step, micro, *args):
        if step == 1 and micro == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return real(cfg, step, micro, *args)

    monkeypatch.setattr(train_dit, "batch_loss", loss_then_ctrl_c)
    run = dit_config("E", "save_every=100")
    with pytest.raises(KeyboardInterrupt):
        train_dit.main(run)
    out = Path(run.output_dir)
    assert checkpoint_step(latest_checkpoint(out)) == 2 and sorted(losses(out)) == [1, 2]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    reset_accelerate()
    monkeypatch.setattr(train_dit, "batch_loss", real)
    train_dit.main(dit_config("E", "save_every=100"))
    a, e = losses(Path(straight_run[0].output_dir)), losses(out)
    assert sorted(e) == list(range(1, TOTAL_STEPS + 1))
    for step in range(1, TOTAL_STEPS + 1):
        assert e[step] == pytest.approx(a[step], abs=1e-5), step


def test_an_error_in_the_loop_gives_ctrl_c_back(dit_config, monkeypatch):
    import signal

    before = signal.getsignal(signal.SIGINT)

    def broken(*args):
        raise RuntimeError("a data error")

    monkeypatch.setattr(train_dit, "batch_loss", broken)
    with pytest.raises(RuntimeError, match="a data error"):
        train_dit.main(dit_config("H", "save_every=100"))
    assert signal.getsignal(signal.SIGINT) is before
    reset_accelerate()


def test_overrides_set_list_items_and_build_unset_mappings():
    cfg = load_config(DiTTrainConfig, None, ["stages.0.steps=7"])
    assert cfg.stages[0].steps == 7
    with pytest.raises(ConfigError, match=r"stages has \d+ items"):
        load_config(DiTTrainConfig, None, ["stages.9.steps=5"])
    assert load_config(VAETrainConfig, None, ["mix.circle=2"]).mix == {"circle": 2.0}


def test_the_logged_lr_is_the_one_the_step_trained_at(straight_run):
    cfg, _ = straight_run
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "log.jsonl").open()]
    schedule = train_dit.lr_lambda(cfg)
    for row in rows:  # step N trains at the schedule's value for index N - 1
        assert row["lr"] == pytest.approx(cfg.lr * schedule(row["step"] - 1)), row["step"]
    assert rows[0]["lr"] < rows[1]["lr"]  # warmup: the first step's rate is the smallest


def test_resume_with_another_lr_is_refused_and_keeps_the_config(dit_config):
    from train.checkpoint import ResumeError

    first = dit_config("F", "max_steps=2", "save_every=2")
    train_dit.main(first)
    out = Path(first.output_dir)
    saved = (out / "config.yaml").read_text()
    reset_accelerate()
    with pytest.raises(ResumeError, match=f"trained with lr {first.lr} .* would be ignored"):
        train_dit.main(dit_config("F", f"lr={first.lr * 3}"))
    assert (out / "config.yaml").read_text() == saved


def test_a_second_run_into_the_same_folder_is_refused(dit_config, tmp_path):
    import fcntl

    run = dit_config("G", "max_steps=1")
    out = Path(run.output_dir)
    out.mkdir(parents=True)
    with open(out / ".lock", "a+") as held:  # another process's run, as the file says
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242\n")
        held.flush()
        with pytest.raises(ValueError, match="being trained into by pid 4242"):
            train_dit.main(run)
    assert not (out / "config.yaml").exists() and not (out / "log.jsonl").exists()
    reset_accelerate()


# -------------------------------------------------------------------------- checkpoints
def _train_state(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer


def test_half_written_checkpoint_is_ignored(tmp_path, monkeypatch):
    accelerator = Accelerator()
    model, optimizer = accelerator.prepare(*_train_state(0))
    good = save_checkpoint(accelerator, tmp_path, 4)
    assert good.name == "step-0000004" and latest_checkpoint(tmp_path) == good
    saved = model.weight.detach().clone()

    # a crash in the middle of writing step 8: files in .tmp-0000008, no rename, no meta
    def crash(path, **kw):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(accelerator, "save_state", crash)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="mid-save"):
        save_checkpoint(accelerator, tmp_path, 8)
    assert (tmp_path / "checkpoints" / ".tmp-0000008").is_dir()
    assert latest_checkpoint(tmp_path) == good
    # even without the `latest` pointer, the scan skips the temporary folder
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path) == good
    monkeypatch.undo()

    accelerator.load_state(str(latest_checkpoint(tmp_path)))
    assert torch.equal(model.weight, saved)
    assert checkpoint_step(good) == 4


def test_checkpoints_rotate_and_replace_the_temporary_folder(tmp_path):
    accelerator = Accelerator()
    accelerator.prepare(*_train_state(0))
    root = tmp_path / "checkpoints"
    (root / ".tmp-0000002").mkdir(parents=True)  # left by an earlier crash
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, step, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000002", "step-0000003"]
    assert (root / "latest").read_text() == "step-0000003"
    assert latest_checkpoint(tmp_path).name == "step-0000003"
    assert latest_checkpoint(tmp_path / "nothing_here") is None


# -------------------------------------------------------------------------- configs
def _config_error(path: Path, text: str, match: str) -> None:
    """Write ``text`` to ``path``; loading it must fail with a ConfigError matching ``match``."""
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(DiTTrainConfig, path)


def test_load_config_rejects_unknown_keys(tmp_path):
    _config_error(tmp_path / "bad.yaml", "nonsense_key: 1\n", r"nonsense_key")
    _config_error(tmp_path / "nested.yaml", "model: {bogus: 1}\n", r"model\.bogus")
    with pytest.raises(ConfigError, match=r"'steps_typo'"):
        load_config(VAETrainConfig, None, ["steps_typo=3"])


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).parent.parent.glob("configs/train/*.yaml")), ids=lambda p: p.name
)
def test_shipped_training_configs_load(path):
    from train.config import ScorerTrainConfig

    cls = {"dit": DiTTrainConfig, "scorer": ScorerTrainConfig, "vae": VAETrainConfig}
    cfg = load_config(cls[path.name.split("_")[0]], path)
    assert cfg.output_dir.startswith("runs/")


def test_load_config_base_chain(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text(
        "lr: 0.5\nseed: 3\ndata: {cache_clips: 10, cache_images: 20}\n"
        "stages:\n  - {name: a, steps: 5}\n  - {name: b, steps: 6}\n"
    )
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\nseed: 4\n")
    (tmp_path / "sub" / "leaf.yaml").write_text(
        "base: mid.yaml\ndata: {cache_images: 30}\nstages:\n  - {name: c, steps: 7}\n"
    )
    cfg = load_config(DiTTrainConfig, tmp_path / "sub" / "leaf.yaml", ["lr=0.25"])
    assert (cfg.lr, cfg.seed) == (0.25, 4)  # override over leaf over mid over root
    assert (cfg.data.cache_clips, cfg.data.cache_images) == (10, 30)  # mappings merge
    assert [(s.name, s.steps) for s in cfg.stages] == [("c", 7)]  # lists are replaced
    (tmp_path / "loop2.yaml").write_text("base: loop.yaml\n")
    _config_error(tmp_path / "loop.yaml", "base: loop2.yaml\n", "base chain loops")
    _config_error(tmp_path / "missing.yaml", "base: nowhere.yaml\n", r"not found: .*nowhere\.yaml")
    _config_error(tmp_path / "typo.yaml", "base: root.yaml\nlr_typo: 1\n", "lr_typo")


@pytest.mark.parametrize(
    "text, key",
    [
        ("lr: fast\n", r"\blr: .*'fast'"),
        ("data: {cache_clips: many}\n", r"data\.cache_clips: .*'many'"),
        ("stages:\n  - {name: a, steps: x}\n", r"steps: .*'x'"),
    ],
)
def test_load_config_rejects_wrong_types_naming_the_key(tmp_path, text, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_config(DiTTrainConfig, bad)


def test_load_config_layers_defaults_yaml_and_overrides(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("lr: 0.001\ndata: {cache_clips: 5}\n")
    cfg = load_config(DiTTrainConfig, exp, ["data.cache_clips=7", "max_steps=3"])
    assert cfg.lr == 0.001 and cfg.data.cache_clips == 7 and cfg.max_steps == 3
    assert cfg.data.cache_images == DiTTrainConfig().data.cache_images  # untouched default
    assert isinstance(cfg.stages[0], config_mod.StageConfig)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(DiTTrainConfig, tmp_path / "missing.yaml")
    # a bad override is named as such, not blamed on the file
    for item, pattern in [
        ("bogus=1", r"^bad override 'bogus=1': .*bogus"),
        ("lr=x", "^bad override 'lr=x'"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            load_config(DiTTrainConfig, exp, [item])


def test_resolve_mixed_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(config_mod, "cpu_has_fast_bf16", lambda: False)
    assert resolve_mixed_precision("auto") == "no"
    monkeypatch.setattr(config_mod, "cpu_has_fast_bf16", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("fp16") == "fp16"  # explicit settings pass through
    assert resolve_mixed_precision("no") == "no"
    # YAML reads a bare `no` as false; a str field then holds "False"
    assert resolve_mixed_precision("False") == "no"
    from_override = load_config(DiTTrainConfig, None, ["mixed_precision=no"]).mixed_precision
    assert resolve_mixed_precision(from_override) == "no"
    with pytest.raises(ConfigError, match="'fp8'"):
        resolve_mixed_precision("fp8")


# -------------------------------------------------------------------------- VAE trainer
def test_vae_training_exports_final_with_scaling_factor(tmp_path):
    from diffusers import AutoencoderKL

    from train.train_vae import main as train_vae

    cfg = load_config(
        VAETrainConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "model=vae_tiny",
            "size=16",
            "batch_size=2",
            "steps=2",
            "warmup=1",
            "log_every=1",
            "mixed_precision=no",
            "model_kwargs={latent_channels: 6}",  # the factory's constructor arguments
        ],
    )
    final = train_vae(cfg)
    assert final == tmp_path / "final"
    vae = AutoencoderKL.from_pretrained(final)
    assert vae.config.latent_channels == 6
    assert vae.config.scaling_factor != 0.18215 and vae.config.scaling_factor > 0
    assert vae.config.shift_factor is not None
    assert list(vae.config.block_out_channels) == [8, 8]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]
    assert checkpoint_step(latest_checkpoint(tmp_path)) == 2


def test_vae_training_checkpoints_at_ctrl_c_and_resumes(tmp_path, monkeypatch):
    import signal

    import train.train_vae as train_vae

    cfg = load_config(
        VAETrainConfig,
        None,
        [f"output_dir={tmp_path}", "model=vae_tiny", "size=16", "batch_size=2", "steps=3",
         "warmup=1", "log_every=1", "save_every=100", "mixed_precision=no"],
    )  # fmt: skip
    real = train_vae.frame_batch

    def batch_then_ctrl_c(world, step, *args, **kw):
        if step == 0:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C in the first step
        return real(world, step, *args, **kw)

    monkeypatch.setattr(train_vae, "frame_batch", batch_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_vae.main(cfg)
    assert checkpoint_step(latest_checkpoint(tmp_path)) == 1  # the step it was in, saved
    monkeypatch.setattr(train_vae, "frame_batch", real)
    reset_accelerate()
    train_vae.main(cfg)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3]
    reset_accelerate()


def test_vae_model_kwargs_build_a_new_vae_only():
    with pytest.raises(ConfigError, match="model_kwargs builds a new VAE"):
        load_config(VAETrainConfig, None, ["init=studio/default_model/vae", "model_kwargs={a: 1}"])


def test_timestep_samplings_cover_the_ends_differently():
    from train.config import DiTTrainConfig
    from train.train_dit import sample_timesteps

    g = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(DiTTrainConfig(timestep_sampling="uniform"), 20000, g)
    logit = sample_timesteps(DiTTrainConfig(), 20000, g)
    assert 0 < uniform.min() and uniform.max() < 1
    assert (uniform > 0.9).float().mean() == pytest.approx(0.1, abs=0.01)
    assert (logit > 0.9).float().mean() == pytest.approx(0.014, abs=0.005)
    with pytest.raises(ValueError, match="timestep_sampling must be one of"):
        sample_timesteps(DiTTrainConfig(timestep_sampling="cosine"), 2, g)


def test_timestep_shift_moves_training_to_noise_as_the_sampler_does():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from train.config import DiTTrainConfig
    from train.train_dit import sample_timesteps, shift_timesteps

    base = sample_timesteps(DiTTrainConfig(), 20000, torch.Generator().manual_seed(0))
    shifted = sample_timesteps(
        DiTTrainConfig(timestep_shift=3.0), 20000, torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(shifted, shift_timesteps(base, 3.0))
    assert (shifted > 0.95).float().mean() > 5 * (base > 0.95).float().mean()
    assert shift_timesteps(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    torch.testing.assert_close(shift_timesteps(base, 1.0), base)
    # the training shift is the one diffusers' sampler applies to its sigmas
    plain, moved = FlowMatchEulerDiscreteScheduler(), FlowMatchEulerDiscreteScheduler(shift=3.0)
    plain.set_timesteps(10)
    moved.set_timesteps(10)
    # (up to diffusers' sigma_min, itself shifted: 0.003 instead of 0.001)
    torch.testing.assert_close(
        moved.sigmas[:-1], shift_timesteps(plain.sigmas[:-1], 3.0), atol=0.01, rtol=0
    )


def test_first_frame_prob_gives_exactly_the_first_frame():
    import numpy as np

    from train.config import DataConfig, DiTTrainConfig
    from train.train_dit import conditioning_prefix

    rng = np.random.default_rng(0)
    i2v = DiTTrainConfig(data=DataConfig(first_frame_prob=1.0))
    assert {conditioning_prefix(i2v, 16, rng) for _ in range(50)} == {1}
    assert conditioning_prefix(i2v, 1, rng) == 0  # an image has nothing to continue
    none = DiTTrainConfig(data=DataConfig(first_frame_prob=0.0, cond_prob=0.0))
    assert {conditioning_prefix(none, 16, rng) for _ in range(50)} == {0}
    half = DiTTrainConfig(data=DataConfig(first_frame_prob=0.5, cond_prob=1.0))
    drawn = [conditioning_prefix(half, 16, rng) for _ in range(2000)]
    ones = np.mean([d == 1 for d in drawn])
    assert 0.5 < ones < 0.6  # 0.5 first-frame + 1/8 of the random 1..8 prefixes
    assert max(drawn) == 8 and min(drawn) == 1


def test_foreground_mask_finds_the_object_and_its_edge():
    from train.train_dit import foreground_mask

    x0 = torch.zeros(1, 4, 2, 8, 8)
    x0[0, :, 0, 2:4, 2:4] = 3.0  # a 2×2 object in frame 0; frame 1 is all background
    fg = foreground_mask(x0, threshold=1.5)
    assert fg.shape == (1, 1, 2, 8, 8)
    assert fg[0, 0, 0, 1:5, 1:5].all() and fg[0, 0, 0].sum() == 16  # dilated by one pixel
    assert fg[0, 0, 1].sum() == 0


def test_foreground_weight_moves_the_loss_toward_object_errors():
    from train.config import DiTTrainConfig
    from train.train_dit import flow_loss

    class Zero(torch.nn.Module):  # predicts v = 0: the error is (noise - x0)² everywhere
        def forward(self, x, t, *a, **k):
            return type("O", (), {"sample": torch.zeros_like(x)})()

        def to_velocity(self, out, sample, sigma):
            return out

    x0 = torch.zeros(2, 4, 1, 8, 8)
    x0[:, :, :, 2:4, 2:4] = 5.0  # objects: large error where x0 is large
    text, mask = torch.zeros(2, 3, 384), torch.ones(2, 3)

    def loss(weight):
        cfg = DiTTrainConfig(foreground_weight=weight)
        return flow_loss(Zero(), x0, text, mask, None, cfg, torch.Generator().manual_seed(1))

    assert loss(4.0) > loss(1.0)


def test_blur_latents_smooths_per_sample_and_keeps_flat_frames():
    from train.train_dit import blur_latents

    x = torch.zeros(3, 2, 2, 8, 8)
    x[:, :, :, 3:5, 3:5] = 4.0  # a square of latent pixels
    y = blur_latents(x, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(y[0], x[0])  # sigma 0: untouched
    # a wider blur spreads more of the square onto its surroundings, mass kept
    spread = [(y[i, :, :, 3:5, 3:5] - 4.0).abs().mean().item() for i in (1, 2)]
    assert 0 < spread[0] < spread[1]
    assert torch.allclose(y.sum(dim=(-1, -2)), x.sum(dim=(-1, -2)), rtol=1e-4)
    flat = torch.full((2, 3, 1, 6, 6), 2.5)
    assert torch.allclose(blur_latents(flat, torch.tensor([1.0, 0.7])), flat)


def test_context_blur_reaches_only_the_given_frames():
    """``context_blur``: the model sees the given frames blurred, the frames it draws noised
    as before, and the loss still targets the clean clip."""
    from train.config import DiTTrainConfig
    from train.train_dit import flow_loss

    seen = []

    class Record(torch.nn.Module):
        def forward(self, x, t, *a, **k):
            seen.append(x.clone())
            return type("O", (), {"sample": torch.zeros_like(x)})()

        def to_velocity(self, out, sample, sigma):
            return out

    x0 = torch.zeros(4, 2, 3, 8, 8)
    x0[:, :, :, 3:5, 3:5] = 4.0
    text, mask = torch.zeros(4, 3, 384), torch.ones(4, 3)
    frame_mask = torch.tensor([[True, False, False]] * 4)

    def run(**kw):
        seen.clear()
        cfg = DiTTrainConfig(**kw)
        loss = flow_loss(
            Record(), x0, text, mask, frame_mask, cfg, torch.Generator().manual_seed(3)
        )
        return seen[0], loss

    plain, loss_plain = run()
    assert torch.equal(plain[:, :, 0], x0[:, :, 0])  # given frames clean by default
    blurred, loss_blur = run(context_blur=1.0, context_blur_prob=1.0)
    assert not torch.equal(blurred[:, :, 0], x0[:, :, 0])
    assert torch.allclose(
        blurred[:, :, 0].sum(dim=(-1, -2)), x0[:, :, 0].sum(dim=(-1, -2)), rtol=1e-4
    )
    # the drawn frames and the loss are the same draws: only the given frames changed
    assert torch.equal(blurred[:, :, 1:], plain[:, :, 1:])
    assert torch.isfinite(loss_blur)
    none, _ = run(context_blur=1.0, context_blur_prob=0.0)
    assert torch.equal(none[:, :, 0], x0[:, :, 0])


def test_sample_prediction_trains(cli, tmp_path):
    """``model.prediction_type=sample``: the x0-predicting model trains through the same loss."""
    from train.config import DiTTrainConfig, load_config
    from train.train_dit import build_model, flow_loss

    cfg = load_config(DiTTrainConfig, None, ["model.prediction_type=sample", "model.size=dit_tiny"])
    model = build_model(cfg, latent_channels=4, text_dim=384, latent_size=8)
    assert model.config.prediction_type == "sample"
    x0 = torch.randn(2, 4, 3, 8, 8)
    text, mask = torch.randn(2, 5, 384), torch.ones(2, 5)
    frame_mask = torch.tensor([[True, False, False], [False, False, False]])
    loss = flow_loss(model, x0, text, mask, frame_mask, cfg, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.proj_out.weight.grad.abs().sum() > 0


def test_text_learning_rate_multiplier_gets_its_own_group():
    from models.video_dit import dit_tiny
    from train.train_dit import param_groups

    cfg = load_config(DiTTrainConfig, None, ["text_lr_multiplier=3", "lr=0.001"])
    model = dit_tiny(in_channels=4, patch_size=2, text_dim=384)
    rest, text = param_groups(model, cfg)
    assert rest["lr"] == pytest.approx(0.001) and text["lr"] == pytest.approx(0.003)
    names = {id(p): n for n, p in model.named_parameters()}
    text_names = [names[id(p)] for p in text["params"]]
    assert all(
        n.startswith(("text_proj.", "pooled_proj.")) or ".cross_attn." in n for n in text_names
    )
    assert sum(".cross_attn." in n for n in text_names) == 8 * len(model.blocks)  # q k v out
    n_all = sum(1 for _ in model.parameters())
    assert len(rest["params"]) + len(text["params"]) == n_all
    # the schedule scales every group alike
    optimizer = torch.optim.AdamW(param_groups(model, cfg))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, train_dit.lr_lambda(cfg))
    optimizer.step()  # no gradients: nothing moves
    schedule.step()
    lrs = schedule.get_last_lr()
    assert lrs[1] / lrs[0] == pytest.approx(3.0)


def test_sample_space_loss_is_the_plain_x0_error():
    """``loss_space=sample``: |x0 − x̂0|², where the velocity loss is the same error / t²."""
    from train.train_dit import flow_loss

    class Const(torch.nn.Module):  # x0-prediction of a constant 1
        def forward(self, x, t, *a, **k):
            return type("O", (), {"sample": torch.ones_like(x)})()

        def to_velocity(self, out, sample, sigma):
            sigma = sigma.reshape(-1, 1, 1, 1, 1)
            return (sample - out) / sigma

    x0 = torch.zeros(3, 4, 2, 8, 8)
    text, mask = torch.zeros(3, 2, 384), torch.ones(3, 2)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    sample = flow_loss(Const(), x0, text, mask, None, DiTTrainConfig(loss_space="sample"), gen())
    assert sample.item() == pytest.approx(1.0)
    t = train_dit.sample_timesteps(DiTTrainConfig(), 3, gen())
    velocity = flow_loss(Const(), x0, text, mask, None, DiTTrainConfig(), gen())
    assert velocity.item() == pytest.approx((1 / t**2).mean().item(), rel=1e-4)


# -------------------------------------------------------------------------- first-frame image model
def test_end_frame_cache_holds_the_first_and_last_frames_of_plain_clips(tmp_path):
    from train.latent_cache import build_cache, encode, load_cache, save_cache
    from world.shapes_world import ShapesWorld

    torch.manual_seed(0)
    vae = vae_tiny(sample_size=16).eval()
    cache = build_cache(vae, 0, 0, size=16, frames=4, n_end_frames=3, progress=False)
    assert cache.end_frames.shape == (3, 2, vae.config.latent_channels, 8, 8)
    assert {s["kind"] for s in cache.end_specs} <= {"video1", "video2"}
    world = ShapesWorld(size=16, frames=4, seed=0, mix={"video1": 0.4, "video2": 0.45})
    clip = world.sample(3 * 10**8 + 1)
    assert cache.end_specs[1]["objects"][0]["shape"] == clip.meta["objects"][0]["shape"]
    expected = encode(vae, clip.frames[[0, -1]]).half()
    torch.testing.assert_close(cache.end_frames[1], expected, atol=1e-3, rtol=0)
    save_cache(cache, tmp_path / "c")
    loaded = load_cache(tmp_path / "c")
    assert torch.equal(loaded.end_frames, cache.end_frames) and loaded.end_specs == cache.end_specs


def test_continuation_cache_follows_the_clips(tmp_path):
    """``n_continuations`` continuation clips with k in the given range come after the plain
    clips, encoded as the sampler renders them."""
    from train.latent_cache import build_cache, encode
    from world.shapes_world import ShapesWorld

    torch.manual_seed(0)
    vae = vae_tiny(sample_size=16).eval()
    cache = build_cache(
        vae, 2, 0, size=16, frames=6, n_continuations=3, continuation_frames=(2, 3), progress=False
    )
    assert cache.clips.shape[:3] == (5, vae.config.latent_channels, 6)
    assert [s["kind"] for s in cache.clip_specs[2:]] == ["continuation"] * 3
    assert all(s["condition_frames"] in (2, 3) for s in cache.clip_specs[2:])
    world = ShapesWorld(
        size=16, frames=6, seed=0, mix={"continuation": 1.0}, continuation_frames=(2, 3)
    )
    clip = world.sample(4 * 10**8 + 1)
    assert cache.clip_specs[3]["condition_frames"] == clip.meta["condition_frames"]
    expected = encode(vae, clip.frames).half().permute(1, 0, 2, 3)  # (C, F, h, w)
    torch.testing.assert_close(cache.clips[3], expected, atol=1e-3, rtol=0)


def test_cache_rendered_by_worker_processes_is_the_same_cache():
    """``workers`` (data.num_workers) render in other processes: the same clips, images, end
    frames and specs, in the same order."""
    from train.latent_cache import build_cache

    vae = vae_tiny(sample_size=16).eval()
    kw = dict(size=16, frames=4, n_continuations=3, n_end_frames=3, progress=False)
    alone = build_cache(vae, 5, 7, **kw)
    pooled = build_cache(vae, 5, 7, workers=2, **kw)
    for part in ("clips", "images", "end_frames"):
        assert torch.equal(getattr(alone, part), getattr(pooled, part)), part
    assert alone.clip_specs == pooled.clip_specs and alone.image_specs == pooled.image_specs
    assert alone.end_specs == pooled.end_specs


def test_continuation_clips_join_the_training_cache(dit_config, cache_dir):
    """data.cache_continuations: a run caches them in a part of their own and trains on them
    with their given frames."""
    cfg = dit_config(
        "CONT",
        "data.cache_continuations=3",
        "data.continuation_frames=[2, 3]",
        "stages=[{name: clips, steps: 2, frames: 8, batch_size: 2}]",
    )
    reset_accelerate()
    train_dit.main(cfg)
    reset_accelerate()
    assert sorted(losses(Path(cfg.output_dir))) == [1, 2]
    (part,) = Path(cache_dir).glob("*-continuations-3-k2-3")
    specs = json.loads((part / "specs.json").read_text())["clips"]
    assert len(specs) == 3 and all(s["condition_frames"] in (2, 3) for s in specs)
    bad = dit_config("CONT_BAD", "data.continuation_frames=[2]")
    reset_accelerate()
    with pytest.raises(ValueError, match="continuation_frames"):
        train_dit.main(bad)
    reset_accelerate()
    with pytest.raises(ConfigError, match="wordnet_phrasing_prob"):  # refused at load
        dit_config("WORDNET_BAD", "data.wordnet_phrasing_prob=-0.1")
    with pytest.raises(ConfigError, match="sentence_structure_prob"):
        dit_config("STRUCTURE_BAD", "data.sentence_structure_prob=1.5")


def _toy_cache():
    """Clips numbered by value: clip i's frame f holds 10·i + f; images hold 100 + i."""
    from train.latent_cache import LatentCache
    from world.shapes_world import ShapesWorld

    world = ShapesWorld(size=16, frames=4, seed=0)
    kinds = ["video1", "continuation", "video2"]
    specs = [{**world.sample(i, kind=k).meta, "kind": k} for i, k in enumerate(kinds)]
    for s in specs:
        s.pop("caption", None)
    clips = (
        torch.arange(3)[:, None, None, None, None] * 10.0
        + torch.arange(4)[None, None, :, None, None]
    )
    clips = clips.expand(3, 2, 4, 2, 2).half()
    images = (100.0 + torch.arange(2)[:, None, None, None]).expand(2, 2, 2, 2).half()
    image_specs = [{**world.sample(10 + i, kind="image").meta, "kind": "image"} for i in range(2)]
    return LatentCache(clips, images, specs, image_specs)


def test_clip_end_frames_skip_continuations_and_image_batches_caption_them_as_clips():
    import numpy as np

    from train.train_dit import clip_end_frames, image_batch

    cache = _toy_cache()
    frames, specs = clip_end_frames(cache)
    assert frames.shape == (2, 2, 2, 2, 2)  # clips 0 and 2 (not the continuation), first + last
    assert frames[:, :, 0, 0, 0].tolist() == [[0.0, 3.0], [20.0, 23.0]]
    assert [s["kind"] for s in specs] == ["video1", "video2"]

    rng = np.random.default_rng(0)
    latents, captions = image_batch(cache, 64, rng, (frames, specs), clip_frame_prob=1.0)
    assert latents.shape == (64, 2, 1, 2, 2)
    values = set(latents[:, 0, 0, 0, 0].tolist())
    assert values == {0.0, 3.0, 20.0, 23.0}  # every one a clip's first or last frame
    # a clip's caption names its background and, for a moving object, its motion
    for value, text in zip(latents[:, 0, 0, 0, 0].tolist(), captions, strict=True):
        spec = specs[int(value) // 20]
        assert spec["background"] in text
    latents, _ = image_batch(cache, 64, rng, (frames, specs), clip_frame_prob=0.0)
    assert set(latents[:, 0, 0, 0, 0].tolist()) == {100.0, 101.0}
    # without clip frames the images are drawn all at once, as before clip frames existed
    state = np.random.default_rng(3)
    latents, _ = image_batch(cache, 16, np.random.default_rng(3))
    torch.testing.assert_close(
        latents, cache.images[state.integers(2, size=16)].float()[:, :, None]
    )
    latents, _ = image_batch(cache, 400, rng, (frames, specs), clip_frame_prob=0.5)
    share = (latents[:, 0, 0, 0, 0] < 100).float().mean().item()
    assert 0.4 < share < 0.6
    # data.sentence_structure_prob: clip and image captions alike in other structures
    _, plain = image_batch(cache, 200, np.random.default_rng(4), (frames, specs), 0.5)
    _, mixed = image_batch(cache, 200, np.random.default_rng(4), (frames, specs), 0.5, 0.0, 1.0)
    grammar_end = ("background", "backdrop")
    assert all(t.endswith(grammar_end) for t in plain)
    assert sum(not t.rstrip(".").endswith(grammar_end) for t in mixed) > 80


def test_init_partial_keeps_fresh_tensors_of_another_shape(tmp_path):
    from models.video_dit import dit_tiny
    from train.checkpoint import init_weights_from

    torch.manual_seed(0)
    dit_tiny(in_channels=4, patch_size=2, text_dim=384).save_pretrained(tmp_path / "p2")
    from safetensors.torch import load_file

    torch.manual_seed(1)
    model = dit_tiny(in_channels=4, patch_size=1, text_dim=384)
    fresh_embed = model.patch.weight.clone()
    with pytest.raises(ValueError, match="shape mismatch"):
        init_weights_from(model, tmp_path / "p2")
    fresh = init_weights_from(model, tmp_path / "p2", partial=True)
    assert sorted(fresh) == ["patch.weight", "proj_out.bias", "proj_out.weight"]
    theirs = load_file(str(tmp_path / "p2" / "diffusion_pytorch_model.safetensors"))
    for k, v in model.state_dict().items():
        if k not in fresh:
            assert torch.equal(v, theirs[k]), k
    assert torch.equal(model.patch.weight, fresh_embed)


def test_image_model_run_exports_the_video_pipeline_with_it(dit_config, straight_run):
    from safetensors.torch import load_file

    _, video_dir = straight_run
    cfg = dit_config(
        "IMG",
        f"image_model_for={video_dir}",
        f"init_from={video_dir}",
        "init_partial=true",
        "model.patch_size=1",
        "data.clip_frame_prob=0.5",
        "data.cache_end_frames=3",
        "timestep_shift=2.5",
        "export_dtype=float16",
        "stages=[{name: first_frames, steps: 3, frames: 1, image_batch_size: 2}]",
    )
    reset_accelerate()
    final = train_dit.main(cfg)
    reset_accelerate()
    assert sorted(losses(Path(cfg.output_dir))) == [1, 2, 3]
    weights = load_file(str(final / "image_transformer" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}
    pipe = ShapesVideoPipeline.from_pretrained(final)
    video = ShapesVideoPipeline.from_pretrained(video_dir)
    assert pipe.image_transformer.config.patch_size == 1
    assert pipe.config.image_shift == 2.5 and pipe.config.image_first is True
    assert pipe.scheduler.config.shift == video.scheduler.config.shift  # the clip's, unchanged
    for a, b in zip(pipe.transformer.parameters(), video.transformer.parameters(), strict=True):
        assert torch.equal(a, b)  # the video model is the one it was trained for
    assert pipe.image_transformer.patch.weight.shape[-1] == 1  # the new patch size
    # it draws single frames; the video model still draws clips
    frame = pipe(
        "a red square",
        num_frames=1,
        height=16,
        width=16,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert frame.shape == (1, 1, 16, 16, 3)


def test_video_run_keeps_the_image_model_it_is_for(dit_config, straight_run, tmp_path):
    """image_model_from: a new video model is saved with another pipeline's first-frame
    image model, its settings and its stored dtype."""
    from safetensors.torch import load_file

    from models.video_dit import dit_tiny

    _, video_dir = straight_run
    source = ShapesVideoPipeline.from_pretrained(video_dir)
    torch.manual_seed(5)
    channels = source.transformer.config.in_channels
    image_model = dit_tiny(in_channels=channels, patch_size=1, text_dim=384).to(torch.float16)
    source.register_modules(image_transformer=image_model)
    source.register_to_config(image_shift=2.5, first_frame_steps=7)
    source.save_pretrained(tmp_path / "source", save_text_encoder=False)

    cfg = dit_config(
        "VID_FOR_IMG",
        f"image_model_from={tmp_path / 'source'}",
        "sample_image_first=true",
        "timestep_shift=7.0",
        "stages=[{name: clips, steps: 2, frames: 4, batch_size: 2}]",
    )
    reset_accelerate()
    final = train_dit.main(cfg)
    reset_accelerate()
    weights = load_file(str(final / "image_transformer" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}  # as the source stored it
    for k, v in image_model.state_dict().items():
        assert torch.equal(weights[k], v), k
    pipe = ShapesVideoPipeline.from_pretrained(final)
    assert pipe.config.image_shift == 2.5 and pipe.config.image_first is True
    assert pipe.config.first_frame_steps == 7  # the image model's settings come with it
    assert pipe.scheduler.config.shift == 7.0  # the new video model's own
    assert pipe.transformer.config.patch_size == 2  # the video model trained here
    video = pipe(
        "a red square moving left",
        num_frames=4,
        height=16,
        width=16,
        num_inference_steps=1,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert video.shape == (1, channels, 4, 8, 8)


def test_image_model_from_needs_an_image_model(dit_config, straight_run):
    _, video_dir = straight_run
    cfg = dit_config("VID_BAD", f"image_model_from={video_dir}")
    reset_accelerate()
    with pytest.raises(ValueError, match="no saved pipeline with an image_transformer"):
        train_dit.main(cfg)
    reset_accelerate()


def test_image_model_run_rejects_clip_stages(dit_config, straight_run):
    _, video_dir = straight_run
    cfg = dit_config("IMG_BAD", f"image_model_for={video_dir}")
    reset_accelerate()
    with pytest.raises(ValueError, match="every stage needs frames: 1"):
        train_dit.main(cfg)
    reset_accelerate()


# -------------------------------------------------------------------------- trust
def test_resume_never_unpickles_a_file_in_the_run_folder(dit_config, tmp_path):
    """The EMA is saved as safetensors + JSON, not through accelerate's custom-object pickle;
    a pickled payload planted in the checkpoint (as custom_checkpoint_0.pkl, which accelerate
    loads with weights_only=False, or as its RNG file) never runs on resume."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = dit_config("pickle", "max_steps=2", "save_every=2")
    train_dit.main(run)
    ckpt = latest_checkpoint(run.output_dir)
    names = {p.name for p in ckpt.iterdir()}
    assert {"ema.state.safetensors", "ema.state.json"} <= names
    assert not any(n.startswith("custom_checkpoint") for n in names)
    # the RNG file is read with weights_only=True: the payload is refused, not run
    torch.save({"x": Payload()}, ckpt / "random_states_0.pkl")
    reset_accelerate()
    train_dit.main(dit_config("pickle", "max_steps=3", "save_every=2"))
    assert not marker.exists()
    assert sorted(losses(run.output_dir)) == [1, 2, 3]
    # a planted custom-object pickle: the checkpoint is refused, the payload never runs
    from train.checkpoint import ResumeError

    for done in Path(run.output_dir, "checkpoints").glob("step-*"):
        torch.save({"x": Payload()}, done / "custom_checkpoint_0.pkl")
    reset_accelerate()
    with pytest.raises(ResumeError, match="no checkpoint loads"):
        train_dit.main(dit_config("pickle", "max_steps=4", "save_every=2"))
    assert not marker.exists()


def test_resume_restores_the_ema_exactly(dit_config, straight_run):
    """Stopped at step 3 and resumed: the exported EMA weights equal the straight run's."""
    from safetensors.torch import load_file

    train_dit.main(dit_config("ema", "max_steps=3", "save_every=3"))
    reset_accelerate()
    final = train_dit.main(dit_config("ema", "save_every=3"))
    a = load_file(str(straight_run[1] / "transformer" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(final / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(dit_config, straight_run):
    """The newest checkpoint's weights are cut in half: the resume warns, goes back to the
    kept one before it, and the run still reproduces the straight run's losses."""
    a = losses(Path(straight_run[0].output_dir))
    run = dit_config("corrupt", "max_steps=4", "save_every=2")
    train_dit.main(run)
    out = Path(run.output_dir)
    newest = latest_checkpoint(out)
    assert checkpoint_step(newest) == 4
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    reset_accelerate()
    train_dit.main(dit_config("corrupt", "save_every=2"))
    c = losses(out)
    assert sorted(c) == list(range(1, TOTAL_STEPS + 1))
    for step in range(1, TOTAL_STEPS + 1):
        assert c[step] == pytest.approx(a[step], abs=1e-5), step


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("model.size=dit_xxl", "unknown model.size 'dit_xxl'"),
        ("model.prediction_type=eps", "model.prediction_type must be one of"),
        ("data.size=18", "data.size 18 must be a multiple of the VAE.s"),
    ],
)
def test_architecture_errors_come_before_the_latent_cache(dit_config, tmp_path, override, pattern):
    cache = tmp_path / "cache"
    run = dit_config(f"arch-{override[:10]}", override, f"data.cache_dir={cache}", "max_steps=1")
    with pytest.raises(ValueError, match=pattern):
        train_dit.main(run)
    assert not cache.exists()  # nothing encoded for a run that cannot start
    reset_accelerate()


def test_resume_with_another_architecture_is_one_error_and_keeps_the_config(dit_config):
    from train.checkpoint import ResumeError

    run = dit_config("arch", "max_steps=2", "save_every=2")
    train_dit.main(run)
    saved = (Path(run.output_dir) / "config.yaml").read_bytes()
    reset_accelerate()
    with pytest.raises(ResumeError, match=r"model\.patch_size: 2 -> 4.*new output_dir"):
        train_dit.main(dit_config("arch", "model.patch_size=4"))
    assert (Path(run.output_dir) / "config.yaml").read_bytes() == saved
    # when no checkpoint loads at all, the error says so (one line, not a traceback)
    for ckpt in (Path(run.output_dir) / "checkpoints").glob("step-*"):
        (ckpt / "model.safetensors").write_bytes(b"garbage")
    reset_accelerate()
    with pytest.raises(ResumeError, match="no checkpoint loads"):
        train_dit.main(dit_config("arch", "max_steps=3"))


@pytest.mark.parametrize(
    "override, key",
    [
        ("lr=-0.01", "lr"),
        ("lr=.nan", "lr"),
        ("text_dropout=5", "text_dropout"),
        ("stages=[{name: a, steps: -5}]", "stage a: steps"),
        ("save_every=0", "save_every"),
        ("log_every=0", "log_every"),
        ("stages=[{name: a, lr: -1}]", "stage a: lr"),
        ("data.cond_prob=1.5", "data.cond_prob"),
        ("ema_decay=2", "ema_decay"),
    ],
)
def test_config_values_out_of_range_are_refused_at_load(override, key):
    with pytest.raises(ConfigError, match=f"^bad config with .*: {key} must be in"):
        load_config(DiTTrainConfig, None, [override])


@pytest.mark.parametrize("cls", [VAETrainConfig, "scorer"])
def test_other_trainers_refuse_out_of_range_values_too(cls):
    from train.config import ScorerTrainConfig

    cls = ScorerTrainConfig if cls == "scorer" else cls
    for override in ("lr=-0.01", "save_every=0", "log_every=0", "steps=-5"):
        with pytest.raises(ConfigError, match="must be in"):
            load_config(cls, None, [override])


def test_malformed_yaml_is_one_config_error_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nstages: [ {name: a\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML \(line 3"):
        load_config(DiTTrainConfig, bad)
    bad.write_bytes(b"lr: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(DiTTrainConfig, bad)
    with pytest.raises(ConfigError, match="bad override 'lr=\\[1'"):
        load_config(DiTTrainConfig, None, ["lr=[1"])


# -------------------------------------------------------------------------- researcher
def test_gradient_accumulation_counts_optimizer_steps_and_resumes_exactly(dit_config):
    """2 micro-batches per optimizer step: steps, schedule and checkpoints count optimizer
    steps, the log states the effective batch, and a stopped run resumes to the same losses."""
    straight = dit_config("ACC_A", "gradient_accumulation_steps=2", "save_every=100")
    train_dit.main(straight)
    entries = [
        json.loads(x) for x in (Path(straight.output_dir) / "log.jsonl").read_text().splitlines()
    ]
    assert [e["step"] for e in entries] == list(range(1, TOTAL_STEPS + 1))
    assert [e["effective_batch"] for e in entries[:2]] == [4, 4]  # image stage: 2 × 2 images
    cfg = load_config(DiTTrainConfig, f"{straight.output_dir}/config.yaml")
    expected = [cfg.lr * train_dit.lr_lambda(cfg)(s) for s in range(TOTAL_STEPS)]  # as used
    assert [e["lr"] for e in entries] == pytest.approx(expected, rel=1e-6)
    reset_accelerate()
    train_dit.main(
        dit_config("ACC_B", "gradient_accumulation_steps=2", "max_steps=3", "save_every=3")
    )
    reset_accelerate()
    train_dit.main(dit_config("ACC_B", "gradient_accumulation_steps=2", "save_every=3"))
    a, b = losses(Path(straight.output_dir)), losses(Path(dit_config("ACC_B").output_dir))
    for step in range(1, TOTAL_STEPS + 1):
        assert b[step] == pytest.approx(a[step], abs=1e-5), step


def test_tensorboard_gets_loss_lr_validation_loss_and_previews(dit_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = dit_config(
        "TB", "report_to=tensorboard", "validation_clips=2", "sample_every=3", "sample_steps=1",
        "save_every=100",
    )  # fmt: skip
    train_dit.main(run)
    out = Path(run.output_dir)
    val = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert [v["step"] for v in val] == [3, 6] and all(v["validation_loss"] > 0 for v in val)
    folders = {p.parent for p in (out / "logs").rglob("events.out.tfevents.*")}
    accs = [EventAccumulator(str(f)).Reload() for f in folders]
    (acc,) = [a for a in accs if "loss" in a.Tags()["scalars"]]  # beside it: the hparams run
    tags = acc.Tags()
    assert {"loss", "lr", "samples_per_s", "validation_loss"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, TOTAL_STEPS + 1))
    assert [e.value for e in acc.Scalars("validation_loss")] == pytest.approx(
        [v["validation_loss"] for v in val]
    )
    assert any(t.startswith("preview/") for t in tags["images"])


def test_lora_training_saves_an_adapter_that_loads_and_leaves_the_base_untouched(
    dit_config, straight_run, text_encoder
):
    """training: lora from the straight run's pipeline: only adapters train, the run writes
    the adapter alone (the base folder's bytes do not change), and the pipeline loads it
    with load_lora_weights: scale 1 changes the video, scale 0 gives the base's."""
    base = straight_run[1]
    before = {p: p.read_bytes() for p in base.rglob("*.safetensors")}
    run = dit_config(
        "LORA", "training=lora", f"init_from={base}", "lora.rank=4", "lr=0.01", "save_every=3"
    )
    final = train_dit.main(run)
    assert final == Path(run.output_dir) / "lora"
    assert (final / "pytorch_lora_weights.safetensors").is_file()
    assert not (Path(run.output_dir) / "pipeline").exists()
    assert {p: p.read_bytes() for p in base.rglob("*.safetensors")} == before

    encoder, tokenizer = text_encoder
    pipe = ShapesVideoPipeline.from_pretrained(base, text_encoder=encoder, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)

    def frames():
        return pipe(
            "a red square", num_frames=2, height=16, width=16, num_inference_steps=2,
            generator=torch.Generator().manual_seed(0), output_type="latent",
        ).frames  # fmt: skip

    plain = frames()
    pipe.load_lora_weights(final, adapter_name="style")
    adapted = frames()
    pipe.set_adapters(["style"], [0.0])
    torch.testing.assert_close(frames(), plain)
    assert (adapted - plain).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="init_from"):
        dit_config("LORA_BAD", "training=lora")


# -------------------------------------------------------------------------- binding hard negatives
def _two_object_spec(m1: str, m2: str) -> dict:
    obj = {"size": "small", "x": 10.0, "y": 10.0, "motion_after": None}
    return {
        "objects": [
            dict(obj, color="red", shape="circle", motion=m1),
            dict(obj, color="blue", shape="square", motion=m2, x=40.0),
        ],
        "background": "gray",
        "frames": 4,
        "size": 64,
        "fps": 8,
        "switch_frame": None,
        "condition_frames": None,
        "kind": "video2",
    }


def test_swapped_motions_swaps_only_when_the_objects_move_differently():
    from train.train_dit import swapped_motions

    swapped = swapped_motions(_two_object_spec("left", "up"))
    assert [o["motion"] for o in swapped["objects"]] == ["up", "left"]
    assert [o["color"] for o in swapped["objects"]] == ["red", "blue"]  # looks stay put
    assert swapped_motions(_two_object_spec("down", "down")) is None
    # after a scene change the caption names the new motions: equal new motions, no negative
    switched = _two_object_spec("left", "up")
    switched["switch_frame"] = 2
    for o in switched["objects"]:
        o["motion_after"] = "down"
    assert swapped_motions(switched) is None
    switched["objects"][1]["motion_after"] = "right"
    assert [o["motion_after"] for o in swapped_motions(switched)["objects"]] == ["right", "down"]
    one = _two_object_spec("left", "up")
    one["objects"] = one["objects"][:1]
    assert swapped_motions(one) is None


def test_binding_negatives_are_the_caption_with_the_motions_swapped():
    from evals.contract import parse_caption
    from train.latent_cache import LatentCache

    specs = [_two_object_spec("left", "up"), _two_object_spec("right", "right")]
    cache = LatentCache(
        torch.zeros(2, 2, 4, 2, 2).half(), torch.zeros(1, 2, 2, 2).half(), specs, []
    )
    stage = config_mod.StageConfig(name="clips", steps=1, frames=4, batch_size=40)
    cfg = DiTTrainConfig(binding_weight=0.1)
    cfg.data.reverse_prob = 0.5
    _, captions, _, _, negatives = train_dit.video_batch(
        cache, stage, cfg, np.random.default_rng(3)
    )
    pairs = [(c, n) for c, n in zip(captions, negatives, strict=True) if n is not None]
    assert 0 < len(pairs) < len(captions)  # the same-motion clips get none
    for cap, neg in pairs:
        true, swapped = parse_caption(cap).objects, parse_caption(neg).objects
        assert [o.color for o in true] == [o.color for o in swapped]
        assert [o.motion for o in swapped] == [o.motion for o in reversed(true)]
    # off by default: no negatives, and the captions drawn are the same either way
    _, plain, _, _, none = train_dit.video_batch(
        cache, stage, DiTTrainConfig(data=cfg.data), np.random.default_rng(3)
    )
    assert plain == captions and none == [None] * len(plain)


def test_binding_hinge_charges_a_model_that_ignores_the_caption():
    """A model that reads no caption predicts alike under the true and the swapped caption:
    the hinge adds weight · margin. One that denoises only under the true caption pays none."""
    from train.train_dit import flow_loss

    x0 = torch.zeros(2, 4, 2, 8, 8)
    x0[:, :, :, 2:4, 2:4] = 5.0

    class Blind(torch.nn.Module):
        def forward(self, x, t, text, *a, **k):
            return type("O", (), {"sample": torch.zeros_like(x)})()

    class Reads(torch.nn.Module):  # x0 exactly under the true caption (text ones), 0 otherwise
        def forward(self, x, t, text, *a, **k):
            right = text[:, :1, :1].reshape(-1, 1, 1, 1, 1) > 0
            return type("O", (), {"sample": torch.where(right, x0[: len(x)] * 0.9, 0 * x)})()

    text, mask = torch.ones(2, 3, 384), torch.ones(2, 3)
    negative = (torch.tensor([1]), -torch.ones(1, 3, 384), torch.ones(1, 3))
    cfg = DiTTrainConfig(loss_space="sample", binding_weight=0.5, binding_margin=0.2)
    cfg.timestep_shift = 1e3  # every row at t ≈ 1, above BINDING_MIN_T
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for model, extra in ((Blind(), 0.5 * 0.2), (Reads(), 0.0)):
        base = flow_loss(model, x0, text, mask, None, cfg, gen())
        with_neg = flow_loss(model, x0, text, mask, None, cfg, gen(), negative)
        assert with_neg.item() == pytest.approx(base.item() + extra, abs=1e-6)
    # with references in the batch the negatives (plain clips) read no <refN> slot
    seen = {}

    class Refs(Blind):
        def forward(self, x, t, text, mask, *a, text_reference_ids=None, **k):
            seen.setdefault("ids", []).append(text_reference_ids)
            assert text_reference_ids.shape == mask.shape
            return super().forward(x, t, text, mask)

    ids = torch.tensor([[0, 1, 0], [0, 0, 0]])
    long_neg = (torch.tensor([1]), -torch.ones(1, 5, 384), torch.ones(1, 5))
    flow_loss(Refs(), x0, text, mask, None, cfg, gen(), long_neg, text_reference_ids=ids)
    assert seen["ids"][1].shape == (1, 5) and not seen["ids"][1].any()
    # below BINDING_MIN_T the hinge is not taken
    cfg.timestep_shift = 1e-3
    base = flow_loss(Blind(), x0, text, mask, None, cfg, gen())
    assert flow_loss(Blind(), x0, text, mask, None, cfg, gen(), negative).item() == base.item()


def test_guidance_distillation_learns_the_teachers_guided_output(text_encoder, tmp_path):
    """guidance_distill: the target is the teacher's u + w·(c − u) at the drawn scale. A
    student that is the teacher with a fresh (zero) guidance input predicts c at every
    scale: no loss at w = 1, a loss at w = 3 equal to the error against the guided output
    computed by hand."""
    from models.video_dit import dit_tiny
    from pipelines.components import encode_text
    from tests.conftest import open_zero_inits
    from train.train_dit import GuidanceTeacher, flow_loss

    encoder, tokenizer = text_encoder
    torch.manual_seed(0)
    teacher = open_zero_inits(dit_tiny(in_channels=4, patch_size=2, text_dim=384)).eval()
    teacher.save_pretrained(tmp_path / "teacher")
    student = dit_tiny(in_channels=4, patch_size=2, text_dim=384, guidance_embeds=True).eval()
    student.load_state_dict(teacher.state_dict(), strict=False)
    cfg = DiTTrainConfig(loss_space="velocity", foreground_weight=1.0)
    cfg.model.guidance_embeds, cfg.model.patch_size = True, 2
    cfg.guidance_distill.teacher = str(tmp_path / "teacher")
    x0 = torch.randn(2, 4, 3, 8, 8)
    text, mask = encode_text(encoder, tokenizer, ["a red square", "a blue circle"], 64, "cpu")
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    with torch.no_grad():
        cfg.guidance_distill.scales = [1.0, 1.0]
        t1 = GuidanceTeacher.load(cfg, encoder, tokenizer, "cpu")
        assert flow_loss(student, x0, text, mask, None, cfg, gen(), teacher=t1).item() < 1e-9
        cfg.guidance_distill.scales = [3.0, 3.0]
        t3 = GuidanceTeacher.load(cfg, encoder, tokenizer, "cpu")
        loss = flow_loss(student, x0, text, mask, None, cfg, gen(), teacher=t3).item()
        # by hand: the same t and noise as flow_loss draws them
        g = gen()
        t = train_dit.sample_timesteps(cfg, 2, g)
        noise = torch.randn(x0.shape, generator=g)
        xt = (1 - t[:, None, None, None, None]) * x0 + t[:, None, None, None, None] * noise
        c = teacher(xt, t * 1000, text, mask).sample
        u = teacher(xt, t * 1000, t3.empty_text.expand(2, -1, -1), t3.empty_mask.expand(2, -1))
        guided = u.sample + 3.0 * (c - u.sample)
        assert loss > 1e-6
        assert loss == pytest.approx(((c - guided) ** 2).mean().item(), rel=1e-4)
    # a student without the guidance input, or a teacher of another patch size: refused
    with pytest.raises(ConfigError, match="guidance_embeds"):
        DiTTrainConfig(guidance_distill=config_mod.GuidanceDistillConfig(teacher="x"))
    cfg.model.patch_size = 4
    with pytest.raises(ValueError, match="patch_size"):
        GuidanceTeacher.load(cfg, encoder, tokenizer, "cpu")


def test_guidance_distillation_run_exports_a_one_call_student(dit_config, straight_run):
    """A tiny distillation run from run A (teacher and initialisation) trains, exports a
    transformer with the guidance input, and its pipeline samples once a step."""
    _, teacher = straight_run
    run = dit_config(
        "G", f"init_from={teacher}", f"guidance_distill.teacher={teacher}",
        "model.guidance_embeds=true", "save_every=100", "max_steps=3",
    )  # fmt: skip
    final = train_dit.main(run)
    assert sorted(losses(Path(run.output_dir))) == [1, 2, 3]
    pipe = ShapesVideoPipeline.from_pretrained(final)
    assert pipe.transformer.config.guidance_embeds is True
    assert pipe.transformer.guidance_embed.linear_2.weight.abs().sum() > 0  # it trained
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    pipe.set_progress_bar_config(disable=True)
    pipe("a red square", num_frames=4, height=16, width=16, num_inference_steps=2,
         guidance_scale=3.0, image_first=False)  # fmt: skip
    assert rows == [1, 1]
