"""``unblur serve``: a web page that generates, edits and restores, with the denoising shown live."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import DEVICE_HELP, add_threads_arg, apply_threads, positive_int

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="a web page over runs: generate, edit, restore, live denoising")
    s.add_argument("run", nargs="*", help="run folders or builtin:NAME (default: the built-in runs: builtin:digits, "
                   "builtin:shapes, builtin:blur)")
    s.add_argument("--prior", action="append", default=[], metavar="RUN",
                   help="a prior (unblur train --model prior --clip ENCODER) for the served unCLIP decoders of the "
                   "same encoder: their prompts go through it (repeatable, one per encoder)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback is reachable from "
                   "other machines, and the page has no accounts (see --token)")
    s.add_argument("--port", type=int, default=7860, help="port to listen on")
    s.add_argument("--token", help="a secret every request must carry (Authorization: Bearer TOKEN or ?token=TOKEN)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--workers", type=positive_int, default=1, help="jobs run at once (1 suits a CPU)")
    s.add_argument("--queue", type=positive_int, default=8, help="jobs that may wait; more get 429 with Retry-After")
    s.add_argument("--max-steps", type=positive_int, default=200, help="the most sampler steps a request may ask")
    s.add_argument("--max-n", type=positive_int, default=16, help="the most images a request may ask")
    s.add_argument("--preview-every", type=float, default=0.0, metavar="SECONDS",
                   help="at least this long between live previews (0: every step)")
    add_threads_arg(s)
    s.set_defaults(fn=run_serve)


def run_names(refs: list[str]) -> dict[str, str]:
    """A short unique name per run for the page: builtin:NAME -> NAME, a folder -> its name."""
    out: dict[str, str] = {}
    for ref in refs:
        base = ref.split(":", 1)[1] if ref.startswith("builtin:") else (Path(ref).resolve().name or ref)
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out[name] = ref
    return out


def match_priors(runs: dict, priors: list) -> dict:
    """Each prior to the served unCLIP decoders of its encoder (by the encoder's sha256)."""
    from ..runs.unclip import is_decoder, is_prior

    out: dict = {}
    decoders = {name: run.data.clip for name, run in runs.items() if is_decoder(run)}
    for prior in priors:
        rec = prior.data.clip
        if not is_prior(prior):
            raise ValueError(f"--prior {prior.ref}: not a prior (train one with `unblur train --model prior --clip "
                             "ENCODER`)")
        mine = [name for name, d in decoders.items() if d.sha256 == rec.sha256]
        if not mine:
            served = ", ".join(f"{n} ({d.path})" for n, d in decoders.items()) or "none"
            raise ValueError(f"--prior {prior.ref} was trained with the encoder {rec.path!r}, and no served "
                             f"decoder was (the served unCLIP decoders and their encoders: {served})")
        for name in mine:
            if name in out:
                raise ValueError(f"two priors for {name!r} ({out[name].ref} and {prior.ref}): give one per encoder")
            out[name] = prior
    return out


def run_serve(args) -> int:
    try:
        import uvicorn

        from ..serve import Limits, create_app
    except ImportError as e:
        raise ValueError(f"unblur serve needs the serve extra ({e.name} is missing): pip install 'unblur[serve]'") \
            from None
    from ..runs import Run
    from ..runs.pretrained import BUILTIN_RUNS

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a port number (1..65535)")
    if args.preview_every < 0:
        raise ValueError(f"--preview-every must be 0 or more seconds, got {args.preview_every}")
    refs = args.run or [f"builtin:{n}" for n in BUILTIN_RUNS]
    names = run_names(refs)
    runs = {}
    for name, ref in names.items():
        runs[name] = Run.load(ref, device=args.device)
        print(f"loaded {ref} as {name!r} ({runs[name].device})", file=sys.stderr)
    priors = match_priors(runs, [Run.load(p, device=args.device) for p in args.prior])
    for name, prior in priors.items():
        print(f"prompts of {name!r} go through the prior {prior.ref}", file=sys.stderr)
    if args.host not in LOOPBACK:
        print(f"unblur serve: warning: listening on {args.host}, reachable from other machines; this page has no "
              "accounts" + (": every request needs --token" if args.token else ": anyone who can reach it can "
                            "use it (give --token SECRET to require one)"), file=sys.stderr)
    apply_threads(args)
    lim = Limits(max_steps=args.max_steps, max_n=args.max_n, preview_every=args.preview_every)
    app = create_app(runs, limits=lim, workers=args.workers, queue=args.queue, token=args.token, priors=priors)
    host = f"[{args.host}]" if ":" in args.host else args.host
    suffix = f"/?token={args.token}" if args.token else "/"
    print(f"unblur serve: http://{host}:{args.port}{suffix} (API documentation at /docs; Ctrl-C stops)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
