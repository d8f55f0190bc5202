#!/bin/sh
# After the files are in place: systemd learns of the new or changed units.
# Nothing is enabled or started: set public_url in /etc/switchboard/serve.yaml
# first, then `systemctl enable --now switchboard` (docs/deploy.md).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
