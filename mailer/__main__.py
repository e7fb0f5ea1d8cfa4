"""Run the command line: ``python -m mailer``."""

from mailer.cli.app import main

if __name__ == "__main__":
    main()
