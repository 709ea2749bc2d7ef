"""Entry point (`make report`, `pipeline-report`) over the reporting package (`pipeline/reporting/`): the training
report, `outputs/<name>/report/index.html`, from the files the stages left.

python -m pipeline.report                    # the default competition (make report)
python -m pipeline.report data=adult         # another one
"""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

import pipeline  # noqa: F401  (registers the `dirname`/`basename` resolvers used by conf/data/csv.yaml)
from pipeline.cli import cli
from pipeline.errors import UserError, user_errors

log = logging.getLogger(__name__)


@hydra.main(config_path="conf", config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from pipeline.artifacts import model_folders  # the stage's code loads only when work starts
    from pipeline.reporting.page import write_report

    with user_errors():
        out_dir = Path(cfg.paths.output_dir)
        if not model_folders(out_dir):
            raise UserError(f"no complete models in {out_dir}/models: train some first (make train)")
        path = write_report(out_dir, Path(cfg.paths.report_dir))
        print(f"report: {path.resolve().as_uri()}")


def run() -> None:
    """`pipeline-report`: the command line checked before Hydra creates its run folder."""
    cli(main, "report")


if __name__ == "__main__":
    run()
