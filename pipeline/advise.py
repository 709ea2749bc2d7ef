"""Entry point (`make advise`, `pipeline-advise`) over the advisor package (`pipeline/advisor/`, where the rules
live): check a training config against the rules of thumb, without training anything.

python -m pipeline.advise                                          # the default config
python -m pipeline.advise optimizer=sgd optimizer.momentum=0       # any `train` override
python -m pipeline.advise -m experiment=mnist optimizer.lr=1e-4,1e-3 model.head.dropout=0,0.1   # a sweep
python -m pipeline.advise advisor.strict=true                      # exit 2 when anything is found (CI)
"""

import sys

import hydra
from omegaconf import DictConfig

import pipeline  # noqa: F401  (registers the `dirname`/`basename` resolvers used by conf/data/csv.yaml)
from pipeline.advisor.rules import check, hydra_sweep, strict_error
from pipeline.cli import cli
from pipeline.errors import user_errors

_SHOWN: set[str] = set()  # findings already printed by an earlier job of this process


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> int:
    with user_errors():
        findings = check(cfg, hydra_sweep())
        new = [f for f in findings if str(f) not in _SHOWN]  # a multirun's jobs share most findings
        for f in new:
            print(f"- {f.rule}: {f.found}\n    rule: {f.why}\n    fix:  {f.fix}")
        _SHOWN.update(str(f) for f in findings)
        shown = f" ({len(findings) - len(new)} shown above)" if len(new) < len(findings) else ""
        print(f"advisor: {len(findings)} finding(s) for this config{shown}" if findings else "advisor: no findings")
        strict_error(cfg, findings, "in the config")
        return len(findings)


def run() -> None:
    """`pipeline-advise`: the command line checked before Hydra creates its run folder."""
    sys.argv.append("~hydra.callbacks.members")  # the member table belongs to training runs, not to advice
    cli(main, "train")


if __name__ == "__main__":
    run()
