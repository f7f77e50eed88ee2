#!/bin/sh
# pihub's first-boot install: copied to the SD card's boot partition (/boot/firmware) next to
# an optional pihub.yaml (your config) and pihub.env (settings below), and run once after the
# network is up, by cloud-init (user-data, Trixie images) or by pihub-firstboot.service
# (firstrun.sh, Bookworm images). Its output goes to /var/log/pihub-firstboot.log.
#
# pihub.env (optional, sh syntax):
#   PIHUB_GIT=https://github.com/you/pihub.git   where to clone pihub from (required, unless
#                                                pihub-src.tar.gz, a `git archive` of the
#                                                checkout, is on the boot partition)
#   PIHUB_REF=main                               branch or tag
#   PIHUB_INSTALL_ARGS="--enable-spi"            extra deploy/install.sh options
set -eu
BOOT=/boot/firmware
[ -d "$BOOT" ] || BOOT=/boot
PIHUB_GIT=
PIHUB_REF=main
PIHUB_INSTALL_ARGS=
[ -f "$BOOT/pihub.env" ] && . "$BOOT/pihub.env"
SRC=/opt/pihub-src
exec >>/var/log/pihub-firstboot.log 2>&1
echo "pihub first boot: $(date)"
if ! command -v git >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git ca-certificates
fi
if [ -f "$BOOT/pihub-src.tar.gz" ] && [ ! -d "$SRC" ]; then
    mkdir -p "$SRC" && tar -xzf "$BOOT/pihub-src.tar.gz" -C "$SRC"
elif [ ! -d "$SRC" ]; then
    [ -n "$PIHUB_GIT" ] || { echo "pihub first boot: set PIHUB_GIT in $BOOT/pihub.env"; exit 1; }
    git clone --depth 1 --branch "$PIHUB_REF" "$PIHUB_GIT" "$SRC"
fi
set --
[ -f "$BOOT/pihub.yaml" ] && set -- --config "$BOOT/pihub.yaml"
# shellcheck disable=SC2086  # PIHUB_INSTALL_ARGS is a list of options
"$SRC/deploy/install.sh" "$@" $PIHUB_INSTALL_ARGS
# done: the firstrun.sh route leaves a one-shot unit behind; it never runs again
systemctl disable pihub-firstboot.service 2>/dev/null || true
echo "pihub first boot: done"
