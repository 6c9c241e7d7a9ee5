"""One module per `vlbert-fast` subcommand; cli.py only parses and delegates."""
