"""The monitors' health thresholds, read from the monitors config (conf/monitors/default.yaml, or a trained model's
config.yaml): the training callbacks warn with them and the report flags with them."""

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from pipeline import CONF_DIR


@dataclass(frozen=True)
class Thresholds:
    ratio_low: float  # healthy ||delta w|| / ||w|| per step is ~1e-3
    ratio_high: float
    warmup_epochs: int  # epochs whose update ratios are not judged (Adam's first steps move every weight by ~lr)
    dead_max: float  # share of never-active units in a ReLU layer above which it is flagged

    @classmethod
    def of(cls, monitors: DictConfig | dict | None = None) -> "Thresholds":
        """From a `monitors` config; keys it lacks (an older model's config) come from conf/monitors/default.yaml."""
        merged = OmegaConf.merge(OmegaConf.load(CONF_DIR / "monitors" / "default.yaml"), monitors or {})
        return cls(float(merged.ratio_low), float(merged.ratio_high), int(merged.warmup_epochs), float(merged.dead_max))

    def ratio_status(self, value: float) -> str:
        """ok inside [ratio_low, ratio_high], else which way to move the LR."""
        if value < self.ratio_low:
            return "low: raise the LR"
        return "high: lower the LR" if value > self.ratio_high else "ok"

    def ratio_advice(self, group: str, value: float, epoch: int) -> str:
        """The warning for an update ratio outside [ratio_low, ratio_high], with the LR change to try."""
        low = value < self.ratio_low
        factor = "x3-x10" if low else "/3-/10"
        key = "model.backbone_lr_mult" if group == "backbone" else "optimizer.lr"
        return (
            f"epoch {epoch}: update/parameter ratio of param group '{group}' is {value:.1e} (median), "
            f"{'below' if low else 'above'} [{self.ratio_low:.0e}, {self.ratio_high:.0e}] (healthy ~1e-3): "
            f"the learning rate is probably too {'low' if low else 'high'}; try {key} {factor}"
        )
