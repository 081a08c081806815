"""`python -m simulators`: the same command line as `pantau simulate`."""

from simulators.cli import main

if __name__ == "__main__":
    main()
