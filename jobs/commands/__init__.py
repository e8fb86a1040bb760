"""One module per `convlstm` subcommand; each has `register(subparsers)` and `run(args) -> int`."""
