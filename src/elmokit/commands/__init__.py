"""Sub-commands of the `elmokit` CLI: each module has `register(subparsers)` that adds its
parser and sets `func` (a callable taking the parsed args and returning an exit code)."""
