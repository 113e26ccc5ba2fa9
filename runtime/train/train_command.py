"""`worldwalk train`: rebuild the bundled model's weights from scratch on the CPU (or a GPU: `--device`).

Stages, in order (each resumes from its checkpoint in --work unless --no-resume):
  data     render random walks through the reference world to a clip cache (walks.py; shares of them retrace
           their path, --revisit, or walk straight at a landmark, --approach)
  vae      train the frame-group VAE on whole frames of those clips (train_vae.py)
  encode   encode windows of the clips with the trained VAE
  world    train the world model by teacher forcing through the streaming cache (train_world.py)
  rollout  continue it with caches written from its own samples (Self-Forcing in spirit)
  decoder  a new, wider decoder (--decoder-channels) trained beside the frozen encoder (the latents do not
           change) on true latents and on the world model's own latents along training windows, with a patch
           critic against the true frames and their edge energy matched (--decoder-adv, --decoder-detail)
  ship     copy the weights and the start frame to --out (default: the package's weights/ folder);
           the teacher-forced world model unless --ship-rollout or --ship-distilled (the distill stage's student)

and, run on its own (`--stage distill`, not part of `all`; `ship --ship-distilled` ships its student):
  distill  a few-step student with short chunks (`--distill-chunk` latent frames, 1 = 4 video frames) distilled
           from the world stage's model: the teacher's ODE trajectories, ODE regression, then Self-Forcing with
           distribution matching against a fake score trained beside it, optionally with a latent critic against
           the true renders' latents (train_distill.py); exported to <work>/distill/ for `eval --checkpoint`
           (`--distill-keep N` also keeps the student every N iterations, `ship --ship-step N` ships one;
           `--distill-regress`, `--distill-rollout` and `--distill-return` hold it to the true latents;
           `ship --ship-kv-window N` sets the attention window it plays with, `--ship-home-view R,DEG,FADE` has a
           chunk back at the first view read only that view)

Budgets are wall-clock minutes per stage besides step counts (the defaults are what made the shipped
weights: about 110 minutes on an otherwise idle 2-core CPU with two torch threads, plus 6 minutes to
render the clips); a stage stops at whichever comes first, so on a busy machine a rerun stops earlier
in its schedule. The shipped world model then continued from those weights for 85 minutes on one core
(`--stage world --world-init <those bundled_world.safetensors> --world-minutes 85 --world-steps 100000
--world-lr 1.5e-4 --world-warmup 20 --world-rollout 0.25 --context-noise 0.1`, data rendered with the
default `--revisit 0.35`), then for 80 more retuned for the 3-step sampler it ships with (`--timesteps
1000,667,333,0 --world-lr 1.2e-4 --world-rollout 0.3 --world-minutes 80` from the result), and last for 80
minutes at one latent frame a chunk (4 video frames) on 2 steps, its weights' moving average shipped
(`--stage encode --chunk-latents 1 --world-chunks 8`, then `--stage world --chunk-latents 1 --world-chunks 8
--timesteps 1000,500,0 --world-init <the 3-step weights> --world-lr 6e-5 --world-warmup 20 --world-rollout 0.5
--context-noise 0.1 --world-ema 0.99 --world-minutes 80 --world-steps 100000 --seed 2`), then on clips that
walk at landmarks: the same recipe from those weights for 75 minutes on 480 clips of which 60 % walk straight
at one (`--stage data --clips 480 --approach 0.6 --seed 4`, then `encode` and `world` as above with
`--world-minutes 75`), and for 28 more on 480 clips of which half of those turn away part-way (`--approach 0.6
--approach-turn 0.5 --seed 5`, `--world-minutes 28 --seed 3`), and for 70 more on 300 clips of 7.5 s like those
with the loss weighted up where the truth changes (`--stage data --clips 300 --clip-frames 121 --approach 0.6
--approach-turn 0.5 --seed 8`, then `--world-motion-weight 3 --world-minutes 70 --seed 9`); last, that world
model was distilled on its own 3 s rollouts in the same work folder (`--stage distill
--distill-window 12 --distill-ema 0.95 --distill-regress 1 --ode-windows 0 --ode-steps 0 --dmd-steps 100000
--dmd-minutes 48 --distill-lr 5e-5 --seed 13`), then continued with the attention window it plays with (`--stage
distill --distill-regress 8 --distill-kv-window 3 --dmd-minutes 108 --distill-keep 15`, the rest as before), and
its student at iteration 300 ships (`--stage ship --ship-distilled --ship-step 300`). Its decoder is the
decoder stage's defaults (1300 steps, the critic for the first 800: about 57 minutes on one core, more on a
busy machine), then 500 steps on the shipped world model's own latents along 80 clips of 10.5 s (`--stage data
--clips 80 --clip-frames 169 --seed 7`, then `--stage decoder --decoder-adv 0 --decoder-detail 2.5 --decoder-profile 10
--decoder-steps 500 --decoder-samples 120 --decoder-paired-frames 49 --seed 3`, 41 minutes on one core); the
model card has every run.
`--stage` runs one stage or all of them.

`--device cuda` trains on a GPU (`auto`, the default, picks it when torch sees one) with bf16 autocast
by default (`--precision`); every stage that trains or runs a model uses it (train_device.py), and the
checkpoints are device-independent, so a run may stop on one device and resume on another.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path

STAGES = ("data", "vae", "encode", "world", "rollout", "decoder", "ship")
OWN_STAGES = ("distill",)  # run only when named


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the bundled world model from scratch (reference world data)")
    p.add_argument("--stage", choices=("all",) + STAGES + OWN_STAGES, default="all",
                   help="run one stage (default: all)")
    p.add_argument("--work", default=None,
                   help="folder for clips, latents and checkpoints (default: $XDG_CACHE_HOME/worldwalk/train, "
                        "else ~/.cache/worldwalk/train)")
    p.add_argument("--out", default=None, help="where `ship` puts the weights (default: the package's weights/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start every stage from scratch")
    p.add_argument("--clips", type=int, default=320, help="random walks to render")
    p.add_argument("--revisit", type=float, default=0.35,
                   help="share of clips that retrace their path back to the start (teaches the return view)")
    p.add_argument("--revisit-frames", type=frame_range_arg, default=(6, 18),
                   help="frames a retracing clip goes out before it turns back, drawn from LO,HI (default 6,18)")
    p.add_argument("--approach", type=float, default=0.0,
                   help="share of clips that walk straight at a landmark (teaches how things grow as you near "
                        "them; starts near the eval's landmark starts are held out)")
    p.add_argument("--approach-turn", type=float, default=0.0,
                   help="share of those that turn away from the landmark part-way (teaches it to leave the view)")
    p.add_argument("--clip-frames", type=int, default=49, help="frames per rendered clip (at least the training "
                   "window: 1 + 12 x (--world-chunks + 1))")
    p.add_argument("--world-chunks", type=int, default=2,
                   help="chunks after the first in a training window (2: 2.3 s windows; longer ones teach returns "
                        "further back, at a cost per step)")
    p.add_argument("--world-lead", type=int, default=0,
                   help="world stage: before the trained chunks the model walks up to this many chunks of the window "
                        "on its own, without gradients (24 at one latent frame a chunk: up to 6 s of its own drift "
                        "before the chunks it learns from; the windows grow by as many chunks)")
    p.add_argument("--world-motion-weight", type=float, default=0.0,
                   help="world stage: weight the loss up by this much where the true latents change from the frame "
                        "before (what walking changes: things growing as they near, parallax; 0: off)")
    p.add_argument("--vae-minutes", type=float, default=25.0)
    p.add_argument("--vae-steps", type=int, default=4500)
    p.add_argument("--world-minutes", type=float, default=78.0)
    p.add_argument("--world-steps", type=int, default=3000)
    p.add_argument("--world-init", default=None,
                   help="a bundled_world.safetensors the world stage starts from when it has no checkpoint "
                        "(continue the shipped model: runtime/worlds/weights/bundled_world.safetensors)")
    p.add_argument("--world-lr", type=float, default=4e-4, help="peak learning rate of the world stage")
    p.add_argument("--world-warmup", type=int, default=50, help="warm-up steps of the world stage")
    p.add_argument("--world-rollout", type=float, default=0.0,
                   help="share of world-stage samples whose cache is written from the model's own chunks")
    p.add_argument("--world-ema", type=float, default=0.0,
                   help="world stage: ship a moving average of the weights with this decay (e.g. 0.99; 0: off)")
    p.add_argument("--context-noise", type=float, default=0.0,
                   help="world stage: the cache is written from latents noised up to this level")
    p.add_argument("--chunk-latents", type=int, default=None,
                   help="latent frames a chunk of the world model the encode and world stages train (and ship): "
                        "1 = 4 video frames, 250 ms at 16 fps; default: the model's 3")
    p.add_argument("--timesteps", type=timesteps_arg, default=None,
                   help="the sampler's timesteps the world stage trains for and ships with (default: the shipped "
                        "model's 1000,667,333,0; SANA-WM's distilled sampler is 1000,960,889,727,0)")
    p.add_argument("--rollout-minutes", type=float, default=8.0)
    p.add_argument("--rollout-steps", type=int, default=80)
    p.add_argument("--decoder-minutes", type=float, default=100.0)
    p.add_argument("--decoder-steps", type=int, default=1300)
    p.add_argument("--decoder-adv", type=float, default=0.05,
                   help="decoder: weight of a patch critic against the true frames (0: off; detail, as TAESD's "
                        "decoders are trained)")
    p.add_argument("--decoder-adv-steps", type=int, default=800,
                   help="decoder: the critic stops at this step; the steps after it fit the truth without it "
                        "(its detail without its grain)")
    p.add_argument("--decoder-detail", type=float, default=1.0,
                   help="decoder: weight of matching each frame's edge energy to the truth's (the eval's detail)")
    p.add_argument("--decoder-profile", type=float, default=0.0,
                   help="decoder: weight of matching each frame's row and column means to the truth's (bands "
                        "across the frame; 0: off)")
    p.add_argument("--decoder-detail-tile", type=tile_arg, default=0,
                   help="decoder: match the edge energy per square of this many pixels (e.g. 16), so edges are "
                        "drawn where the truth has them (0: over the whole frame)")
    p.add_argument("--decoder-channels", type=channels_arg, default=(64, 192),
                   help="decoder: train a new decoder of these widths beside the frozen encoder (the shipped one: "
                        "64,192); `none` tunes the decoder the VAE has")
    p.add_argument("--decoder-paired-frames", type=int, default=0,
                   help="decoder: on the world model's own latents, match pixels only in the first N frames of a "
                        "window (past them only detail and profile; 0: every frame)")
    p.add_argument("--decoder-padding", choices=("zeros", "replicate", "reflect"), default=None,
                   help="decoder: how its convolutions pad the frame's edge (replicate gives the border no value "
                        "of its own to draw; default: the VAE's own)")
    p.add_argument("--decoder-samples", type=int, default=200,
                   help="training windows the world model generates for the decoder stage")
    p.add_argument("--ship-rollout", action="store_true",
                   help="ship the rollout-stage model (the shipped weights are the teacher-forced one: it "
                        "measured better at 1 s and 20 s, worse at 5 s)")
    p.add_argument("--ship-distilled", action="store_true",
                   help="ship the distill stage's student (<work>/distill/) as the world model")
    p.add_argument("--ship-step", type=int, default=None,
                   help="with --ship-distilled: ship the student kept at this dmd step (see --distill-keep) "
                        "instead of the last export")
    p.add_argument("--ship-kv-window", type=_kv_window_arg, default=None, metavar="N",
                   help="ship the world with its softmax blocks seeing the first chunk and the last N - 1 chunks "
                        "(the attention window is the runtime's: the weights do not change; default: as trained)")
    p.add_argument("--ship-home-view", type=_home_view_arg, default=None, metavar="RADIUS,DEGREES,FADE",
                   help="ship the world so that a chunk whose camera ends within RADIUS (camera units: 0.1 is one "
                        "world unit, half a second's walk) and DEGREES of the first frame's view reads only the "
                        "first chunk in its softmax blocks, the other chunks fading out from 1 + FADE times those "
                        "(the weights do not change; 0,20,0 turns it off; default: as trained, off)")
    p.add_argument("--distill-chunk", type=int, default=1,
                   help="distill: the student's latent frames a chunk (1: 4 video frames, 250 ms at 16 fps)")
    p.add_argument("--distill-timesteps", type=timesteps_arg, default=(1000, 500, 0),
                   help="distill: the student's sampler (default 1000,500,0: two passes a chunk)")
    p.add_argument("--teacher-steps", type=int, default=16, help="distill: Euler steps of the teacher's ODE")
    p.add_argument("--distill-window", type=int, default=3,
                   help="distill: a training window is the first image and this many of the teacher's chunks "
                        "(with 1 latent frame a chunk, 8 are 2 s)")
    p.add_argument("--ode-windows", type=int, default=160, help="distill: teacher trajectories to regress")
    p.add_argument("--ode-steps", type=int, default=400)
    p.add_argument("--ode-minutes", type=float, default=20.0)
    p.add_argument("--dmd-steps", type=int, default=4000)
    p.add_argument("--dmd-minutes", type=float, default=85.0)
    p.add_argument("--distill-lr", type=float, default=3e-5, help="distill: the student's learning rate (dmd)")
    p.add_argument("--distill-gan", type=float, default=0.0,
                   help="distill: weight of a latent critic against the true renders' latents (0: off)")
    p.add_argument("--distill-ema", type=float, default=0.0,
                   help="distill: export a moving average of the student's weights with this decay (e.g. 0.95; "
                        "0: the student itself)")
    p.add_argument("--distill-regress", type=float, default=0.0,
                   help="distill: weight of the world stage's flow-matching loss on the window's true latents, "
                        "added to the student's (keeps it to the truth where it can know; 0: off)")
    p.add_argument("--distill-rollout", type=float, default=0.0,
                   help="distill: weight of the student's own rollout against the window's true latents (MSE), "
                        "added to the student's (holds a free run to the truth, e.g. turning away; 0: off)")
    p.add_argument("--distill-return", type=float, default=0.0,
                   help="distill: the same, only on the latents back at the window's first view (retraced walks "
                        "come back to it; 0: off)")
    p.add_argument("--distill-kv-window", type=_kv_window_arg, default=0, metavar="N",
                   help="distill: the softmax blocks see the first chunk and the last N - 1 chunks, in the teacher, "
                        "the fake score and the student it exports (default: the teacher's window)")
    p.add_argument("--distill-student", default="", metavar="FILE",
                   help="distill: a bundled_world.safetensors the student starts from (default: the teacher's copy)")
    p.add_argument("--distill-grow", type=int, default=0, metavar="N",
                   help="distill: append N blocks to the student, each starting as the identity (a larger student)")
    p.add_argument("--distill-grow-lr", type=float, default=10.0, metavar="X",
                   help="distill: the appended blocks' learning rate over the student's")
    p.add_argument("--distill-keep", type=int, default=0,
                   help="distill: also keep the student every N dmd steps in <work>/distill/steps/, to score and "
                        "ship one with --ship-step (0: only the last export)")
    p.add_argument("--ckpt-minutes", type=float, default=4.0, help="distill: minutes between checkpoints")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train: auto = cuda when torch sees a GPU, else cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="bf16 = autocast around the forward passes (fp32 weights, optimiser and losses); "
                        "default: bf16 on cuda, fp32 on cpu (where bf16 is several times slower)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: every core; on a machine busy with other work 1 is fastest, "
                        "as idle OpenMP threads spin)")
    p.set_defaults(func=run)


def _home_view_arg(text: str) -> tuple[float, float, float]:
    """`--ship-home-view 0.1,20,2`: (SanaWMConfig.home_radius, home_angle_deg, home_fade)."""
    from worldwalk.runtime.sana_wm.config import check_home_view

    try:
        radius, degrees, fade = (float(v) for v in text.split(","))
        check_home_view(radius, degrees, fade)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: give RADIUS,DEGREES,FADE (e.g. 0.1,20,2): {e}") from None
    return radius, degrees, fade


def _kv_window_arg(text: str) -> int:
    """`--ship-kv-window 3`, `--distill-kv-window 3`: chunks a softmax block sees, the first counted (1 or more)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of chunks, 1 or more (e.g. 3)")
    return n


def timesteps_arg(text: str) -> tuple[int, ...]:
    """`--timesteps 1000,667,333,0`: the sampler's integer timesteps, strictly falling to 0."""
    from worldwalk.runtime.sana_wm.sampler import SamplerConfig

    try:
        steps = tuple(int(x) for x in text.split(","))
        SamplerConfig(timesteps=steps)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers falling strictly to 0, "
                                         f"comma-separated, e.g. 1000,667,333,0 ({e})") from None
    return steps


def channels_arg(text: str) -> tuple[int, ...] | None:
    """`--decoder-channels 64,192`: widths, multiples of 8 (GroupNorm's groups); `none`: no new decoder."""
    if text.strip().lower() == "none":
        return None
    try:
        widths = tuple(int(x) for x in text.split(","))
    except ValueError:
        widths = ()
    if not widths or any(w < 8 or w % 8 for w in widths):
        raise argparse.ArgumentTypeError(f"{text!r}: give widths that are multiples of 8, e.g. 64,192")
    return widths


def tile_arg(text: str) -> int:
    """`--decoder-detail-tile 16`: a square of 2 to 256 pixels, or 0 for the whole frame."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n != 0 and not 2 <= n <= 256:
        raise argparse.ArgumentTypeError(f"{text!r}: give a square's side of 2 to 256 pixels (e.g. 16), or 0 for "
                                         "the whole frame")
    return n


def frame_range_arg(text: str) -> tuple[int, int]:
    """`--revisit-frames 12,40`: LO,HI with 1 <= LO <= HI."""
    try:
        lo, hi = (int(x) for x in text.split(","))
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: give LO,HI frames with 1 <= LO <= HI, e.g. 6,18")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from worldwalk.runtime.safe_files import UnsafeFileError, printable

    from .state_file import ForeignFileError
    from .train_device import NoCudaError

    try:
        return _run(args)
    except (ForeignFileError, UnsafeFileError, NoCudaError) as e:  # a planted or foreign file, or no GPU for cuda
        print(f"worldwalk train: {printable(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refuses (a name too long, no permission, a full disk): said plainly
        print(f"worldwalk train: {printable(e)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from worldwalk.runtime.safe_files import open_regular, replaced
    from worldwalk.runtime.sana_wm.sampler import SamplerConfig
    from worldwalk.runtime.sana_wm.vae import SanaWMVAE
    from worldwalk.runtime.worlds.bundled_vae import FrameVAE, FrameVAEStream
    from worldwalk.runtime.worlds.bundled_world import START_FILE, VAE_FILE, WEIGHTS, WORLD_FILE, BundledConfig

    from .scripted import landmark_starts
    from .state_file import default_work, restoring, work_file
    from .train_device import resolve_device
    from .train_vae import DecoderTuneConfig, TrainVAEConfig, finetune_decoder, read_vae, train_vae
    from .train_world import TrainWorldConfig, encode_windows, train_world
    from .walks import ClipCache, WalkConfig

    dev = resolve_device(args.device, args.precision)  # before any work: --device cuda without a GPU stops here
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    work = Path(args.work) if args.work else default_work()
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = Path(args.out) if args.out else WEIGHTS
    resume = not args.no_resume
    stages = STAGES if args.stage == "all" else (args.stage,)  # an OWN_STAGES stage only when named
    cfg = BundledConfig(sampler=SamplerConfig(timesteps=args.timesteps)) if args.timesteps else BundledConfig()
    if args.chunk_latents is not None:
        if args.chunk_latents < 1:
            raise SystemExit("worldwalk train: --chunk-latents must be at least 1")
        cfg.transformer = dataclasses.replace(cfg.transformer, chunk_latent_frames=args.chunk_latents)
    clips = ClipCache(work / "clips")
    latents = work / "latents.npz"
    vae_file, world_file = work / VAE_FILE, work / WORLD_FILE
    rollout_file, tuned_file = work / "bundled_world_rollout.safetensors", work / "bundled_vae_tuned.safetensors"
    if args.world_chunks < 1:
        raise SystemExit("worldwalk train: --world-chunks must be at least 1")
    if args.world_lead < 0:
        raise SystemExit("worldwalk train: --world-lead is a number of chunks, 0 or more")
    # the first image, the lead's chunks and the trained ones
    window = 1 + cfg.stride * cfg.chunk_latents * (args.world_lead + args.world_chunks + 1)

    print(f"training on {dev}", flush=True)
    for stage in stages:
        print(f"== stage {stage}", flush=True)
        if stage == "data":
            if clips.exists() and resume:
                print(f"clip cache {clips.folder} exists; keeping it")
                continue
            if args.clip_frames < window:
                raise SystemExit(f"worldwalk train: --clip-frames {args.clip_frames} is shorter than the training "
                                 f"window of --world-lead {args.world_lead} and --world-chunks {args.world_chunks} "
                                 f"({window} frames); pass --clip-frames {window} or more")
            for flag, share in (("--approach", args.approach), ("--approach-turn", args.approach_turn)):
                if not 0.0 <= share <= 1.0:
                    raise SystemExit(f"worldwalk train: {flag} is a share of the clips, 0 to 1; got {share}")
            clips.build(args.clips, args.clip_frames, seed=args.seed + 1,
                        cfg=WalkConfig(revisit=args.revisit, revisit_frames=args.revisit_frames,
                                       approach=args.approach, approach_avoid=landmark_starts(),
                                       approach_turn=args.approach_turn))
        elif stage == "vae":
            # whole frames, not crops: trained on 64x64 crops (4x4 latents, all near a border) the VAE
            # learned border cues and decoded whole frames to nearly the same image whatever the input
            vcfg = TrainVAEConfig(steps=args.vae_steps, minutes=args.vae_minutes, batch=2,
                                  crop=(cfg.vae.height, cfg.vae.width), seed=args.seed)
            train_vae(vcfg, clips, work, vae_file, resume=resume, vcfg=cfg.vae, dev=dev)
        elif stage == "encode":
            if latents.exists() and resume:
                print(f"{latents} exists; keeping it")
                continue
            vae = read_vae(vae_file)[0].to(dev.device)  # the shipped one, with its wider decoder, as well
            stream = FrameVAEStream(vae.eval()) if isinstance(vae, FrameVAE) else SanaWMVAE(vae.eval())
            clip_frames = clips.load()[0].shape[1]
            if clip_frames < window:
                raise SystemExit(f"worldwalk train: the clips in {clips.folder} have {clip_frames} frames, fewer than "
                                 f"the {window}-frame window of --world-lead {args.world_lead} and --world-chunks "
                                 f"{args.world_chunks}; rebuild them "
                                 f"(remove the folder, then --stage data --clip-frames {window})")
            data = encode_windows(stream, clips, window, cfg.stride * cfg.chunk_latents, dev=dev)
            with replaced(latents) as f:
                np.savez(f, **data)
        elif stage in ("world", "rollout"):
            with restoring(latents):
                data = dict(np.load(work_file(latents)))
            if stage == "world":
                have = (data["latents"].shape[2] - 1) // cfg.chunk_latents - 1
                if have < args.world_lead + args.world_chunks:
                    print(f"the windows in {latents} hold {have} chunks after the first, not the "
                          f"{args.world_lead + args.world_chunks} of --world-lead and --world-chunks: training on "
                          f"{have} (re-encode for longer windows)")
                tcfg = TrainWorldConfig(steps=args.world_steps, minutes=args.world_minutes, seed=args.seed,
                                        lr=args.world_lr, warmup=args.world_warmup, rollout_prob=args.world_rollout,
                                        context_noise=args.context_noise, chunks=args.world_chunks,
                                        ema=args.world_ema, lead=args.world_lead,
                                        motion_weight=args.world_motion_weight)
                init = Path(args.world_init) if args.world_init else None
                train_world(tcfg, data, work, world_file, cfg, resume=resume, init_weights=init, dev=dev)
            else:
                tcfg = TrainWorldConfig(steps=args.rollout_steps, minutes=args.rollout_minutes, seed=args.seed + 7,
                                        lr=1.5e-4, warmup=10, rollout_prob=1.0)
                train_world(tcfg, data, work, rollout_file, cfg, resume=resume, tag="rollout", dev=dev)
        elif stage == "distill":
            from .train_distill import DistillConfig, StudentStartError, distill

            if not world_file.exists():
                raise SystemExit(f"worldwalk train: the distill stage needs a teacher in {world_file}: run the world "
                                 "stage first, or copy a bundled_world.safetensors (and its bundled_vae.safetensors, "
                                 "whose latents it was trained on) there")
            if args.distill_grow < 0 or args.distill_grow_lr <= 0:
                raise SystemExit("worldwalk train: --distill-grow is a number of blocks, 0 or more, and "
                                 "--distill-grow-lr a positive factor")
            dcfg = DistillConfig(chunk_latents=args.distill_chunk, timesteps=args.distill_timesteps,
                                 teacher_steps=args.teacher_steps, window_chunks=args.distill_window,
                                 ode_windows=args.ode_windows,
                                 ode_steps=args.ode_steps, ode_minutes=args.ode_minutes, dmd_steps=args.dmd_steps,
                                 dmd_minutes=args.dmd_minutes, lr=args.distill_lr, gan_weight=args.distill_gan,
                                 ema=args.distill_ema, regress_weight=args.distill_regress,
                                 rollout_weight=args.distill_rollout, return_weight=args.distill_return,
                                 kv_window=args.distill_kv_window, student_init=args.distill_student,
                                 grow_blocks=args.distill_grow, grow_lr=args.distill_grow_lr,
                                 ckpt_minutes=args.ckpt_minutes, keep_every=args.distill_keep, seed=args.seed)
            try:
                distill(dcfg, clips, work, world_file, resume=resume, dev=dev,
                        log=lambda m: print(m, flush=True))
            except StudentStartError as e:
                raise SystemExit(f"worldwalk train: {e}") from None
        elif stage == "decoder":
            samples = _world_samples(work / "decoder_samples.safetensors", clips, world_file, args, resume, dev)
            dcfg = DecoderTuneConfig(steps=args.decoder_steps, minutes=args.decoder_minutes, seed=args.seed,
                                     adv_weight=args.decoder_adv, adv_stop=args.decoder_adv_steps,
                                     detail_weight=args.decoder_detail, detail_tile=args.decoder_detail_tile,
                                     profile_weight=args.decoder_profile,
                                     decoder_channels=args.decoder_channels,
                                     paired_frames=args.decoder_paired_frames,
                                     decoder_padding=args.decoder_padding)
            finetune_decoder(dcfg, clips, vae_file, work, tuned_file, resume=resume, samples=samples, dev=dev)
        elif stage == "ship":
            out.mkdir(parents=True, exist_ok=True)
            best = rollout_file if args.ship_rollout and rollout_file.exists() else world_file
            if args.ship_step is not None and not args.ship_distilled:
                raise SystemExit("worldwalk train: --ship-step chooses among the distill stage's students: give "
                                 "--ship-distilled with it")
            if args.ship_distilled:
                from .train_distill import kept_steps, kept_world

                best = work / "distill" / WORLD_FILE if args.ship_step is None else kept_world(work, args.ship_step)
                if args.ship_step is None and not best.exists():
                    raise SystemExit(f"worldwalk train: --ship-distilled ships {best}, which is not there: run "
                                     "`--stage distill` in this work folder first")
                if not best.exists():
                    kept = kept_steps(work)
                    raise SystemExit(f"worldwalk train: no student was kept at dmd step {args.ship_step}: " + (
                        f"the kept steps are {', '.join(map(str, kept))}" if kept else
                        "run `--stage distill` with --distill-keep N to keep one every N steps"))
            for src, dst in ((tuned_file if tuned_file.exists() else vae_file, VAE_FILE), (best, WORLD_FILE)):
                with open_regular(work_file(src), follow_symlinks=False) as f, replaced(out / dst) as g:
                    shutil.copyfileobj(f, g)
            played = {} if args.ship_kv_window is None else {"kv_window": args.ship_kv_window}
            if args.ship_home_view is not None:
                radius, degrees, fade = args.ship_home_view
                played.update(home_radius=radius, home_angle_deg=degrees, home_fade=fade)
            if played:
                _set_played_config(out / WORLD_FILE, **played)
            with replaced(out / START_FILE) as f:
                np.save(f, np.ascontiguousarray(_start_frame(cfg)))
            print(f"weights in {out}: {VAE_FILE}, {WORLD_FILE} (from {best.relative_to(work)}), {START_FILE}")
    return 0


def _set_played_config(path: Path, **played: object) -> None:
    """Rewrite a world weights file's config with how it plays (SanaWMConfig fields: `kv_window`, `home_radius`,
    `home_angle_deg`, `home_fade`); the weights as they are."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from worldwalk.runtime.sana_wm.config import SanaWMConfig

    from .state_file import write_safetensors

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    cfg = SanaWMConfig.from_dict(json.loads(meta["config"]))
    meta["config"] = json.dumps(dataclasses.replace(cfg, **played).to_dict())
    write_safetensors(path, load_file(str(path)), meta)


def _world_samples(path: Path, clips: object, world_file: Path, args: argparse.Namespace, resume: bool,
                   dev: object) -> list:
    """The teacher-forced world model's own latents along training windows (kept in `path` for a resume),
    generated on `dev` (a TrainDevice); CPU tensors."""

    from worldwalk.runtime.worlds.bundled_vae import FrameVAEStream
    from worldwalk.runtime.worlds.bundled_world import load_weights

    from .state_file import load_state, restoring, save_state
    from .train_world import sample_windows

    if resume and (path.exists() or path.with_suffix(".pt").exists()):
        tensors, meta = load_state(path, "decoder-samples")
        with restoring(path):
            return [(int(i), int(s), tensors[f"sample.{j}"]) for j, (i, s) in enumerate(meta["windows"])]
    if not world_file.exists():
        print(f"no world model in {world_file} yet: the decoder is tuned on true latents only")
        return []
    cfg, vae, model = load_weights(world_file.parent)  # the work folder's VAE and world model, configs included
    frames, poses, intr = clips.load()
    vae.to(dev.device)
    model.to(dev.device)
    samples = sample_windows(model, FrameVAEStream(vae), frames, poses, intr, cfg, args.decoder_samples, args.seed + 5,
                             dev=dev)
    save_state(path, "decoder-samples", {f"sample.{j}": z for j, (_, _, z) in enumerate(samples)},
               {"windows": [[i, s] for i, s, _ in samples]})
    return samples


def _start_frame(cfg: object) -> object:
    """The reference world's view from its spawn point at the bundled size (the default first frame)."""
    import numpy as np

    from worldwalk.controls import intrinsics_from_fov
    from worldwalk.runtime.worlds.reference_world import ReferenceWorld, ReferenceWorldConfig

    v = cfg.vae
    with ReferenceWorld(ReferenceWorldConfig(width=v.width, height=v.height, seed=0)) as world:
        return world.render(np.eye(4), intrinsics_from_fov(v.width, v.height))  # controls.DEFAULT_FOV_DEG
