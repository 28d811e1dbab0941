"""``python -m tests.plugin_cli ARGS``: benchsuite's CLI with the test plugins registered, for subprocess tests."""

import sys

from benchsuite.cli import main
from benchsuite.compressors import registry
from tests.plugins import register

if __name__ == "__main__":
    register(registry)
    sys.exit(main(sys.argv[1:]))
