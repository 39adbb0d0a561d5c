"""The `tandem` command line: each subcommand lives in mlx_tandem.commands.<name>
and exposes add_arguments(parser) and main(args) -> int."""

import argparse
import importlib
import sys

COMMANDS = {
    "generate": "generate text with a model (FP8 kernels)",
    "convert": "convert a Hugging Face directory or GGUF file to an FP8 checkpoint",
    "launch": "run one rank of a two-machine pipeline",
    "serve": "an OpenAI-compatible HTTP server (continuous batching; one process or rank 0 of the pipeline)",
    "demo": "run the packaged demo model (optionally as two local ranks)",
    "bench": "benchmarks: kernels, attention, model, pipeline",
}


def _module(name):
    if name == "bench":
        return importlib.import_module("mlx_tandem.bench")
    return importlib.import_module(f"mlx_tandem.commands.{name}")


def build_parser():
    parser = argparse.ArgumentParser(prog="tandem", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        try:
            mod = _module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("mlx_tandem"):
                continue  # subcommand not part of this build
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args._main(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
