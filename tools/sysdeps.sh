#!/bin/sh
# Installs the Debian / Raspberry Pi OS packages pihub needs to build and test, when
# missing. Uses sudo unless already root. Prints what it installs; silent otherwise.
set -eu
need=""
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
command -v gcc >/dev/null 2>&1 || need="$need gcc libc6-dev"
command -v make >/dev/null 2>&1 || need="$need make"
# venv + ensurepip: Debian splits them out of python3 (python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need="$need python3-venv"
# Python.h for the cffi extension
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need="$need python3-dev"
have_pkg libffi-dev || need="$need libffi-dev"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
[ -z "$need" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "pihub needs:$need (install them with your package manager)" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages:$need"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $need
