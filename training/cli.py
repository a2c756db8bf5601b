"""`python -m training <command>`: one command per kind of model, flags from the configs."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from training.fraud import FraudConfig, train_fraud
from training.fraud_evaluate import FraudEvaluationConfig, evaluate_fraud
from training.fraud_reasons_check import ReasonsCheckConfig, check_reasons
from training.images import ImageConfig, TransferConfig, train_images
from training.transfer_experiment import TransferExperimentConfig, run_transfer_experiment


def _add_config_flags(parser: argparse.ArgumentParser, config_type: type) -> None:
    """One `--flag` per dataclass field, with its default in the help text."""
    hints = typing.get_type_hints(config_type)
    for f in dataclasses.fields(config_type):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `X | None`: takes an X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        kwargs: dict[str, Any] = {"default": default, "help": f"default: {default}"}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is list:
            kwargs.update(nargs="+", type=typing.get_args(hint)[0])
        elif typing.get_origin(hint) is typing.Literal:
            kwargs["choices"] = typing.get_args(hint)
        elif hint in (int, float, str):
            kwargs["type"] = hint
        parser.add_argument(flag, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    runners: dict[str, tuple[type, Callable[[Any], Any]]] = {
        "images": (ImageConfig, train_images),
        "transfer": (TransferConfig, train_images),
        "transfer-experiment": (TransferExperimentConfig, run_transfer_experiment),
        "fraud": (FraudConfig, train_fraud),
        "evaluate": (FraudEvaluationConfig, evaluate_fraud),
        "reasons-check": (ReasonsCheckConfig, check_reasons),
    }
    for name, (config_type, run) in runners.items():
        sub = commands.add_parser(
            name, help=(run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None
        )
        _add_config_flags(sub, config_type)
    args = vars(parser.parse_args(argv))
    config_type, run = runners[args.pop("command")]
    run(config_type(**args))
