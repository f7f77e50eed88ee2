# pihub on first boot, for Bookworm images (Raspberry Pi Imager's firstrun.sh).
# Paste these lines into /boot/firmware/firstrun.sh on the card, just before its last lines
# (`rm -f /boot/firstrun.sh` ...), and copy deploy/firstboot.sh to the boot partition (and
# optionally pihub.yaml and pihub.env, see firstboot.sh). firstrun.sh runs before the network
# is up, so it only leaves a one-shot unit that runs firstboot.sh once the network is online.
cat >/etc/systemd/system/pihub-firstboot.service <<'UNIT'
[Unit]
Description=pihub first-boot install
Wants=network-online.target
After=network-online.target time-sync.target
ConditionPathExists=/boot/firmware/firstboot.sh

[Service]
Type=oneshot
ExecStart=/bin/sh /boot/firmware/firstboot.sh
TimeoutStartSec=30min

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/pihub-firstboot.service /etc/systemd/system/multi-user.target.wants/pihub-firstboot.service
