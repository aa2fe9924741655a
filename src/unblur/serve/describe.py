"""What the page knows about a served run (``GET /api/runs``), asked of the run itself: what it
can do (its process, ``Run.check_edit``), how it is conditioned (its config's ``cond`` section
and the caption width its network was built for), its samplers (``process.samplers``) and
defaults (``Run.plan``)."""

from __future__ import annotations

from typing import Any

from ..runs import Run

EDITS = ("img2img", "inpaint")  # the page's edits, as ``Run.check_edit`` names them


def abilities(run: Run, chain=None) -> list[str]:
    """What the page may ask of ``run``: generate, the edits its process allows, restore; an unCLIP
    decoder (``chain``) generates from prompts through its prior, if it has one, and makes variations."""
    if chain is not None:
        return (["generate"] if chain.prior is not None else []) + ["variations"]
    can = ["generate"] if run.process.can_generate else []
    for edit in EDITS:
        try:
            run.check_edit(edit)
        except ValueError:
            continue
        can.append(edit)
    if run.process.restores:
        can.append("restore")
    return can


def describe(name: str, run: Run, chain=None) -> dict[str, Any]:
    """The page's description of ``run`` served as ``name`` (``chain``: an unCLIP decoder's ``Unclip``)."""
    plan = run.plan()
    classes = list(run.data.class_names or []) if run.config.cond.classes else []  # class-conditioned runs only
    text = run.data.text_dim is not None  # built for caption features: it takes prompts
    unclip = None
    if chain is not None:  # prompts through its prior, and variations of an upload
        text = chain.prior is not None
        unclip = {"prior": None, "prior_steps": None, "prior_guidance": None}
        if chain.prior is not None:
            unclip = {"prior": chain.prior.ref, "prior_steps": chain.prior.plan().steps,
                      "prior_guidance": chain.prior.config.cond.guidance}
    C, H, W = run.image_shape
    return {"name": name, "ref": run.ref, "process": run.process.kind, "restorer": bool(run.process.restores),
            "can": abilities(run, chain), "classes": classes, "text": text, "channels": C, "size": [H, W],
            "samplers": list(run.process.samplers), "sampler": plan.sampler, "steps": plan.steps,
            "guidance": run.config.cond.guidance if (text or classes or unclip) else 1.0,
            "model_hash": run.weights_sha256, "latent": run.latent is not None, "unclip": unclip}
