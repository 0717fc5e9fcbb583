"""The `cops` command line: a Typer app and one thin module per subcommand."""
