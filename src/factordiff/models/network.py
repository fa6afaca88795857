"""The base of the diffusion model's networks: built from their config section by keyword,
saved and loaded on their own.

diffusers' ``ModelMixin`` + ``ConfigMixin`` record each network's constructor arguments,
so ``net.save_pretrained(DIR)`` writes ``config.json`` + safetensors and
``Net.from_pretrained(DIR)`` rebuilds it without the run's whole ``Config``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from diffusers import ConfigMixin, ModelMixin


class Network(ModelMixin, ConfigMixin):
    @classmethod
    def from_section(cls, section: Any, **context: Any):
        """The network from its config section (``cfg.model.unet`` ...) by keyword; options
        of the section that are not the network's (``first_stage.train_steps``) are left
        out, and ``context`` gives what the section does not hold (input channels)."""
        params = inspect.signature(cls.__init__).parameters
        own = {k: v for k, v in dataclasses.asdict(section).items() if k in params}
        return cls(**own, **context)

    @classmethod
    def section_options(cls, section: Any) -> set[str]:
        """The section's fields that ``from_section`` passes on (for tests and docs)."""
        params = inspect.signature(cls.__init__).parameters
        return {f.name for f in dataclasses.fields(section) if f.name in params}
