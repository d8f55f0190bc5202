#!/bin/sh
# After removal: systemd forgets the units. The data in /var/lib/switchboard
# and the user stay (a reinstall finds them).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
