#!/bin/sh
# pihub's one-command install on Raspberry Pi OS: sudo deploy/install.sh [--help]
# Everything is in install.py (stdlib Python: the system python3 runs it before any venv exists).
set -eu
exec /usr/bin/python3 "$(dirname "$0")/install.py" "$@"
