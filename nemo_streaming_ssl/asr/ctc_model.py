"""NeMo's CTC models (char and subword) whose ``init_from_nemo_model`` refuses partial or mismatched weights."""

from __future__ import annotations

from nemo.collections.asr.models import EncDecCTCModel, EncDecCTCModelBPE

from .pretrained_config import PretrainedMismatchError


def selected_keys(keys, include, exclude) -> set[str]:
    """The keys NeMo's ``load_part_of_state_dict`` picks: containing an ``include`` substring and no ``exclude`` one."""
    return {k for k in keys if any(p in k for p in include) and not any(e in k for e in exclude)}


class StrictPartialInit:
    """Mixin for a NeMo model: ``init_from_nemo_model`` loads the selected weights strictly.

    Only ``load_part_of_state_dict`` changes, so set ``model.target`` to the stock NeMo class in the
    config: the saved ``.nemo`` then restores with stock NeMo.
    """

    def load_part_of_state_dict(self, state_dict, include, exclude, load_from_string=None):
        # NeMo loads the selected part non-strictly: a renamed, missing or extra weight would pass silently.
        source = load_from_string or "the pretrained checkpoint"
        own = self.state_dict()
        wanted = selected_keys(state_dict, include, exclude)
        needed = selected_keys(own, include, exclude)
        problems = []
        if not wanted:
            problems.append(f"include {list(include)} / exclude {list(exclude)} select no weight of {source}")
        if unused := sorted(wanted - needed):
            problems.append(f"{len(unused)} selected pretrained weights have no place in this model, e.g. {unused[:5]}")
        if missing := sorted(needed - wanted):
            problems.append(f"{len(missing)} weights of this model are not in {source}, e.g. {missing[:5]}")
        if reshaped := [
            f"{k}: pretrained {tuple(state_dict[k].shape)}, here {tuple(own[k].shape)}"
            for k in sorted(wanted & needed)
            if state_dict[k].shape != own[k].shape
        ]:
            problems.append("shapes differ: " + "; ".join(reshaped[:5]))
        if problems:
            raise PretrainedMismatchError(
                f"cannot initialise from {source}:\n  " + "\n  ".join(problems)
                + "\nThe selected modules must have the same architecture (copy their config from the pretrained model)."
            )
        super().load_part_of_state_dict(state_dict, include, exclude, load_from_string)


class StrictInitCTCModel(StrictPartialInit, EncDecCTCModel):
    """Char-vocabulary CTC model; saved as ``EncDecCTCModel``."""


class StrictInitCTCBPEModel(StrictPartialInit, EncDecCTCModelBPE):
    """Subword (SentencePiece) CTC model; saved as ``EncDecCTCModelBPE``."""
